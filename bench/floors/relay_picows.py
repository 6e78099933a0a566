"""bench/floors/relay.py's relay with ``picows`` (a Cython WebSocket library) framing:
what a Python server gains by leaving the framing to compiled code. Its handshake is
picows' own (a full RFC 6455 upgrade); everything else is relay.py's: one agent on a
PTY, each client frame's payload written to it, each PTY read sent as one frame.

    python bench/floors/relay_picows.py PORT AGENT [ARG ...]   (prints "ready")
"""

from __future__ import annotations

import asyncio
import os
import sys

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server
from relay import read_pty, start_agent  # (this folder: the script's own)


class Relay(WSListener):  # type: ignore[misc]
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.master, self.agent = start_agent(self.argv)
        asyncio.get_running_loop().add_reader(self.master, self.readable)

    def readable(self) -> None:
        data = read_pty(self.master)
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self.transport.disconnect()
            return
        self.transport.send(WSMsgType.BINARY, data)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type in (WSMsgType.BINARY, WSMsgType.TEXT):
            os.write(self.master, frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.agent.kill()
        self.agent.wait()


async def main(port: int, argv: list[str]) -> None:
    server = await ws_create_server(lambda request: Relay(argv), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2:]))
