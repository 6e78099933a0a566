"""The redactor's fast path (text that cannot hold any masked shape is returned after one
search) masks exactly what the full set of substitutions masks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openova_sandbox import logs


def full_scrub(text: str) -> str:
    text = logs._JWT.sub(logs.REDACTED, text)
    text = logs._URL_CREDS.sub(r"\1***@", text)
    text = logs._SCHEME_CREDS.sub(r"\1 " + logs.REDACTED, text)
    text = logs._ASSIGNED.sub(r"\1" + logs.REDACTED, text)
    return logs._QUERY_TOKEN.sub(r"\1" + logs.REDACTED, text)


PIECES = st.sampled_from(
    [
        "eyJhbGciOiJFUzI1NiJ9",
        ".",
        "eyJzdWIiOiJ4In0",
        "c2lnbmF0dXJl",
        "https://",
        "user:pw@host",
        "@",
        ":",
        "=",
        " ",
        "\t",
        "Bearer",
        "basic",
        "sk-0123456789abcdef",
        "token",
        "api_key",
        "password",
        "code",
        "state",
        "&",
        '"',
        "gpt-4.1-mini",
        "sb-one",
        "acme",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=12))
def test_the_fast_path_masks_what_the_substitutions_mask(parts: list[str]) -> None:
    text = "".join(parts)
    assert logs.scrub(text) == full_scrub(text)
