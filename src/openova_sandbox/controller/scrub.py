"""Credential scrubbing for text that leaves the controller (conditions, logs).

git prints the URL it failed on, and the configured base URL may carry a token
(``https://user:token@host/...``) or a signed query string. Condition messages are
readable by every user of the sandbox and logs are shipped elsewhere, so anything that
looks like a credential is replaced before the text is stored or logged. Pure text in,
text out: the reconciler applies it a second time as a guard, so it must be idempotent.
"""

from __future__ import annotations

import re

MASK = "***"
MAX_MESSAGE = 1024

# scheme://userinfo@  → scheme://***@   (userinfo: anything up to @ without / or space)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# Any query parameter value inside a URL: ?a=1&b=2 → ?a=***&b=***
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_QUERY_VALUE = re.compile(r"(?P<key>[?&;][^=&;#\s]+=)(?P<value>[^&;#\s'\"]+)")
# Secret-looking assignments outside URLs: token=abc, password: abc, Authorization: Bearer x
_ASSIGNMENT = re.compile(
    r"(?i)(?P<key>\b(?:access[_-]?token|private[_-]?token|token|password|passwd|secret|"
    r"api[_-]?key|apikey|client[_-]?secret)\b\s*[=:]\s*)(?P<value>[^\s&'\"]+)"
)
_BEARER = re.compile(r"(?i)(?P<key>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")


def _scrub_url(match: re.Match[str]) -> str:
    url = match.group(0)
    head, sep, query = url.partition("?")
    if not sep:
        return url
    return head + _QUERY_VALUE.sub(
        lambda m: m.group("key") + (m.group("value") if m.group("value") == MASK else MASK),
        "?" + query,
    )


def _mask(match: re.Match[str]) -> str:
    return match.group("key") + MASK


def scrub_credentials(text: str) -> str:
    """Replace credentials in ``text`` by ``***``; idempotent."""
    text = _USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _URL.sub(_scrub_url, text)
    text = _ASSIGNMENT.sub(_mask, text)
    return _BEARER.sub(_mask, text)


def clean_message(text: str, *, limit: int = MAX_MESSAGE) -> str:
    """Scrubbed, whitespace-trimmed and bounded: fit for a condition message."""
    cleaned = scrub_credentials(text).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 3].rstrip() + "..."
    return cleaned
