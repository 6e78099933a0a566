"""Credentials never survive into condition messages or logs."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from openova_sandbox.controller.scrub import MAX_MESSAGE, clean_message, scrub_credentials


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "fatal: unable to access 'https://bot:tok@git.example/acme/a.git/': 403",
            "fatal: unable to access 'https://***@git.example/acme/a.git/': 403",
        ),
        ("https://onlytoken@git.example/x", "https://***@git.example/x"),
        (
            "see https://git.example/a.git?access_token=abc123&ref=main#frag",
            "see https://git.example/a.git?access_token=***&ref=***#frag",
        ),
        ("token=abc password: hunter2", "token=*** password: ***"),
        ("Authorization: Bearer abcdefghijkl", "Authorization: Bearer ***"),
        (
            "file:///tmp/repos/acme/a.git does not exist",
            "file:///tmp/repos/acme/a.git does not exist",
        ),
        ("fatal: repository not found", "fatal: repository not found"),
    ],
)
def test_scrub_table(text: str, expected: str) -> None:
    assert scrub_credentials(text) == expected
    assert scrub_credentials(expected) == expected  # idempotent


secret = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_.~"),
    min_size=6,
    max_size=40,
).filter(lambda s: s.strip(".") == s)


@given(user=secret, token=secret)
def test_no_userinfo_survives(user: str, token: str) -> None:
    text = f"fatal: could not read from 'https://{user}:{token}@git.example/acme/app.git'"
    out = scrub_credentials(text)
    assert token not in out
    assert "https://***@git.example/acme/app.git" in out


@given(token=secret)
def test_no_query_token_survives(token: str) -> None:
    around = "GET https://h/x?private_token={}&a=b failed"
    assume(token not in around.format(""))  # ("privat" is in the text whatever is scrubbed)
    out = scrub_credentials(around.format(token))
    assert token not in out


def test_clean_message_bounds_length() -> None:
    out = clean_message("x" * 5000)
    assert len(out) == MAX_MESSAGE
    assert out.endswith("...")
