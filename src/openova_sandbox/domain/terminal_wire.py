"""The terminal wire's vocabulary, once for every edge: close codes and reasons, the
signals a client may send, and the ``sandbox.v2`` subprotocol's name and frame header.

Both HTTP edges (the control plane's attach routes and ``sandbox pty-server``), the
embedded and the Kubernetes terminal services and the CLI speak these numbers; see
docs/terminal.md ("Close codes", "The sandbox.v2 protocol"). Pure: no I/O.
"""

from __future__ import annotations

import signal
import struct

# WebSocket close codes (RFC 6455) and what they mean here
CLOSE_NORMAL = 1000  # the agent exited: reason "agent exited with code N"
CLOSE_GOING_AWAY = 1001  # session already ended, or the server sent the viewer away
CLOSE_UNSUPPORTED = 1003  # sandbox.v2: a text frame that is not a JSON object
CLOSE_POLICY = 1008  # origin, unauthenticated, token-expired, share-*, sandbox-deleting
CLOSE_INTERNAL = 1011  # cannot start the agent / provisioning failed (reason in terminal)
CLOSE_TRY_LATER = 1013  # not Ready in time, or the sandbox's session limit
# what a peer's close code reads as when no close frame came (never sent on the wire)
NOT_SENT = frozenset({1005, 1006})  # no status received, connection lost

# close reasons clients act on (a 1008's reason is one of these words)
REASON_ORIGIN = "origin not allowed"
REASON_UNAUTHENTICATED = "unauthenticated"
REASON_TOKEN_EXPIRED = "token-expired"
REASON_SHARE_REVOKED = "share-revoked"
REASON_SHARE_EXPIRED = "share-expired"
REASON_SANDBOX_DELETING = "sandbox-deleting"
REASON_BAD_CONTROL = "bad control frame"
CLOSE_REASON_MAX = 120  # bytes: a close frame's reason is at most 123


def exit_reason(exit_code: int | None) -> str:
    """The 1000 close reason: the console and the CLI read the number after ``code``."""
    return "agent exited" if exit_code is None else f"agent exited with code {exit_code}"


def clip_reason(reason: str) -> str:
    return reason.encode()[:CLOSE_REASON_MAX].decode(errors="ignore")


# signals a client may send to a terminal's process group, by name
SIGNALS: dict[str, int] = {
    "INT": signal.SIGINT,
    "QUIT": signal.SIGQUIT,
    "TERM": signal.SIGTERM,
    "HUP": signal.SIGHUP,
}
SIGNAL_NAMES = tuple(SIGNALS)
SIGNAL_HINT = "use INT, QUIT, TERM or HUP"


def signal_number(name: str) -> int | None:
    """``"int"``, ``"SIGINT"`` → ``signal.SIGINT``; ``None`` for anything else."""
    return SIGNALS.get(name.strip().upper().removeprefix("SIG"))


# the sandbox.v2 subprotocol (docs/terminal.md, "The sandbox.v2 protocol")
SUBPROTOCOL_V2 = "sandbox.v2"
RAW = ""  # no subprotocol: raw attach (terminal-protocol.md)
READ, WRITE = "read", "write"  # viewer modes
HEADER = struct.Struct(">Q")  # a v2 binary frame: 8-byte big-endian stream offset, payload


def pack_frame(start: int, payload: bytes) -> bytes:
    return HEADER.pack(start) + payload


def unpack_frame(frame: bytes) -> tuple[int, bytes]:
    """``(start, payload)`` of a v2 binary frame (for clients and tests)."""
    (start,) = HEADER.unpack_from(frame)
    return start, frame[HEADER.size :]
