"""Kinds, label selectors and continue tokens: what parses, what matches, what is a 400."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openova_sandbox.domain.errors import Invalid, NotFound
from openova_sandbox.services.resources_query import (
    canonical_kind,
    check_limit,
    decode_continue,
    encode_continue,
    page,
    parse_kinds,
    parse_label_selector,
)

LABELS = {"app": "web", "example.com/tier": "gold", "empty": ""}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("example.com/tier=gold", True),
        (" app = web , example.com/tier ", True),
        ("app=web,example.com/tier=silver", False),
        ("empty=", True),
        ("app=", False),
    ],
)
def test_selector_matching(selector, expected):
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize(
    "selector",
    [
        "a=b=c",
        "a,",
        ",a",
        "=x",
        "!",
        "bad key",
        "a in (b,c)",
        "k=-x",
        "-k",
        "a" * 64,
        "Bad_Prefix/k=v",
        "/k",
        "k=" + "v" * 64,
        "a!=b!=c",
    ],
)
def test_bad_selectors_are_invalid_label_selector(selector):
    with pytest.raises(Invalid) as caught:
        parse_label_selector(selector)
    assert caught.value.code == "invalid-label-selector"
    assert selector in caught.value.detail


def test_kinds():
    assert canonical_kind("sandbox") == "sandbox"
    assert canonical_kind("Sandboxes") == "sandbox"
    with pytest.raises(NotFound) as caught:
        canonical_kind("pods")
    assert caught.value.code == "unknown-kind" and "sandbox" in caught.value.detail
    assert parse_kinds("sandboxes, sandbox") == ("sandbox",)
    for bad, code in (
        ("", "missing-kinds"),
        (" , ", "missing-kinds"),
        ("sandbox,pods", "unknown-kind"),
    ):
        with pytest.raises(Invalid) as invalid:
            parse_kinds(bad)
        assert invalid.value.code == code


key_part = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", fullmatch=True)


@given(namespace=key_part, name=key_part)
def test_continue_tokens_round_trip_and_are_url_safe(namespace, name):
    token = encode_continue((namespace, name))
    assert "=" not in token and "/" not in token and "+" not in token
    assert decode_continue(token) == (namespace, name)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "%%",
        "a b",
        "Zm9v",
        base64.urlsafe_b64encode(b"/x").decode(),
        base64.urlsafe_b64encode(b"ns/a/b").decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xff\xfe/x").decode().rstrip("="),
        "A",
    ],
)
def test_forged_continue_tokens_are_invalid_continue(token):
    with pytest.raises(Invalid) as caught:
        decode_continue(token)
    assert caught.value.code == "invalid-continue"


def test_paging_and_limits():
    ordered = [(("a", str(i)), i) for i in range(5)]
    first = page(ordered, limit=2)
    assert first.items == (0, 1) and first.next_key == ("a", "1")
    second = page(ordered, after=first.next_key, limit=2)
    assert second.items == (2, 3) and second.next_key == ("a", "3")
    last = page(ordered, after=second.next_key, limit=2)
    assert last.items == (4,) and last.next_key is None
    assert page(ordered, limit=5).next_key is None
    assert page(ordered).items == (0, 1, 2, 3, 4)
    assert check_limit(None) is None and check_limit(500) == 500
    for bad in (0, 501, -3):
        with pytest.raises(Invalid):
            check_limit(bad)
