"""The floor of a Python terminal server: the least a uvloop server can do per keystroke.

One WebSocket connection relayed to one agent on a PTY, with nothing else: no routes,
no auth, no ring, no screen model, no accounting, no viewers but one. It answers the
upgrade with a 101 (the key is not checked: only the keystroke path is measured),
spawns the agent on a PTY, writes each client frame's unmasked payload to the PTY and
sends each PTY read as one binary frame. The servers of this project are measured next
to it (bench/terminal.py): what they add over it is their own cost; what it costs over
a raw PTY is the interpreter's and the two loopback hops'.

    python bench/floors/relay.py PORT AGENT [ARG ...]     (prints "ready" when listening)
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys

import uvloop

_101 = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def start_agent(argv: list[str]) -> tuple[int, subprocess.Popen[bytes]]:
    """The agent on a PTY of its own: the PTY's master side and the process."""
    master, slave = os.openpty()
    agent = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    return master, agent


def read_pty(master: int) -> bytes:
    """One read of the PTY; ``b""`` once the agent is gone."""
    try:
        return os.read(master, 65535)
    except OSError:  # EIO: no process holds the other side any more
        return b""


class Relay(asyncio.Protocol):
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.master, self.agent = start_agent(self.argv)
        asyncio.get_running_loop().add_reader(self.master, self.readable)

    def readable(self) -> None:
        data = read_pty(self.master)
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self.transport.close()
            return
        if self.upgraded:
            size = len(data)
            head = bytes((0x82, size)) if size < 126 else b"\x82\x7e" + struct.pack("!H", size)
            self.transport.write(head + data)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.upgraded:
            head, sep, buffer = buffer.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = head
                return
            self.upgraded = True
            self.transport.write(_101)
        while len(buffer) >= 6:  # a client frame: 2 header bytes, [length], 4 mask bytes
            size, at = buffer[1] & 0x7F, 2
            if size == 126:
                size, at = struct.unpack_from("!H", buffer, 2)[0], 4
            elif size == 127:
                size, at = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < at + 4 + size:
                break
            mask = int.from_bytes(buffer[at : at + 4] * (size // 4 + 1), "big") >> (
                8 * (4 - size % 4)
            )
            payload = buffer[at + 4 : at + 4 + size]
            if buffer[0] & 0x0F == 0x8:  # close
                self.transport.close()
                return
            if buffer[0] & 0x0F in (0x1, 0x2):
                os.write(self.master, (int.from_bytes(payload, "big") ^ mask).to_bytes(size, "big"))
            buffer = buffer[at + 4 + size :]
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.agent.kill()
        self.agent.wait()


async def main(port: int, argv: list[str]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Relay(argv), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2:]))
