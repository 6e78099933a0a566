"""How every server of this project runs under uvicorn (CLI, tests and benchmarks alike).

- WebSocket implementation ``websockets-sansio``: the leanest of uvicorn's, with
  TCP_NODELAY on every socket (asyncio's default), so a keystroke is not held by Nagle.
- ``permessage-deflate`` off: terminal frames are already coalesced, compressing them
  costs CPU per viewer, and a compressed stream hides how far a slow viewer lags (the
  resync policy needs the real backlog).
- uvicorn's access log off and its log config left alone: requests are logged by the
  app with route templates only (query strings can carry ``access_token``).
"""

from __future__ import annotations

from typing import Any

UVICORN_OPTIONS: dict[str, Any] = {
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "access_log": False,
    "log_config": None,
}
