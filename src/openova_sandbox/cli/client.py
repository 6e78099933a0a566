"""The CLI's HTTP client for a running server: one place for the base URL, the token
and turning error envelopes into readable messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the first request: `sandbox pty-server` never makes one
    import httpx


class ApiError(Exception):
    """An answer of the API (``status`` and its ``error`` code), or ``status`` 0 when no
    server answered at all."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        where = f" (HTTP {status}{', ' + code if code else ''})" if status else ""
        super().__init__(f"{detail or code}{where}")
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class ApiClient:
    server: str
    token: str = field(repr=False)
    timeout: float = 15.0
    token_from: str = ""  # where the token came from, for advice when it is refused
    # the organization asked for (`sandbox login --org`): sent as X-Sandbox-Org, it picks
    # one of several orgs the token names
    org: str = ""

    def request(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        import httpx

        url = self.server.rstrip("/") + path
        try:
            response = httpx.request(
                method,
                url,
                json=json,
                headers={
                    **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                    **({"X-Sandbox-Org": self.org} if self.org else {}),
                },
                timeout=self.timeout,
            )
        except httpx.ConnectError as exc:
            reason = str(exc).split("] ", 1)[-1] or "connection failed"
            raise ApiError(
                0, "unreachable", f"no server answers at {self.server} ({reason.lower()})"
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.server}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            code = str(body.get("error", "")) if isinstance(body, dict) else ""
            detail = str(body.get("detail", "")) if isinstance(body, dict) else ""
            if response.status_code == 401 and not detail:
                detail = "the server did not accept the token (expired, or another data dir?)"
            elif not detail and not code:
                # not the API's error envelope: another server, or a wrong --server path
                detail = f"{response.reason_phrase or 'error'} from {url} (is --server right?)"
            raise ApiError(response.status_code, code, detail)
        return response
