"""``WebSocketChannel.wait_gone`` on the ASGI path (a server without the lean frame
path): it reads ahead to see the client leave, and every frame it read is still
received, in order, by the attach that follows."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from openova_sandbox.api.terminal_edge.channel import WebSocketChannel


def channel_fed_by(queue: asyncio.Queue[dict[str, Any]]) -> WebSocketChannel:
    async def receive() -> dict[str, Any]:
        return await queue.get()

    async def send(_message: dict[str, Any]) -> None:
        return None

    scope = {"type": "websocket", "path": "/", "headers": [], "query_string": b""}
    websocket = WebSocket(scope, receive, send)
    websocket.client_state = WebSocketState.CONNECTED
    websocket.application_state = WebSocketState.CONNECTED
    return WebSocketChannel(websocket, "")


def test_frames_read_while_watching_are_received_in_order_then_the_end() -> None:
    async def scenario() -> list[Any]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        channel = channel_fed_by(queue)
        watch = asyncio.ensure_future(channel.wait_gone())
        await queue.put({"type": "websocket.receive", "bytes": b"typed early"})
        await queue.put({"type": "websocket.receive", "text": '{"type":"resize"}'})
        await asyncio.sleep(0)
        assert not watch.done()  # data is not a departure
        await queue.put({"type": "websocket.disconnect", "code": 1001})
        await asyncio.wait_for(watch, 5)
        return [await channel.receive() for _ in range(3)]

    assert asyncio.run(scenario()) == [b"typed early", '{"type":"resize"}', None]


def test_a_watch_stopped_when_the_wait_ends_loses_nothing() -> None:
    async def scenario() -> list[Any]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        channel = channel_fed_by(queue)
        watch = asyncio.ensure_future(channel.wait_gone())
        await queue.put({"type": "websocket.receive", "bytes": b"a"})
        while not channel._early:  # the watch has read it
            await asyncio.sleep(0)
        watch.cancel()  # Ready: the attach takes over
        await asyncio.gather(watch, return_exceptions=True)
        await queue.put({"type": "websocket.receive", "bytes": b"b"})
        return [await channel.receive(), await channel.receive()]

    assert asyncio.run(scenario()) == [b"a", b"b"]
