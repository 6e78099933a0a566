"""PKCE, redirect checks and flow states: the I/O-free rules of the connect flow."""

from __future__ import annotations

import base64
import re
import uuid
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openova_sandbox.domain.errors import Invalid
from openova_sandbox.services.byos_flow import (
    DEFAULT_POST_CONNECT_REDIRECT,
    FlowStates,
    challenge_for,
    check_redirect,
    new_verifier,
)

B64URL_43 = re.compile(r"^[A-Za-z0-9_-]{43}$")


def test_rfc7636_appendix_b_vector():
    octets = bytes(
        [116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
         22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121]
    )  # fmt: skip
    verifier = base64.urlsafe_b64encode(octets).rstrip(b"=").decode()
    assert verifier == "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert challenge_for(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifier_is_32_random_bytes_base64url_without_padding():
    seen = {new_verifier() for _ in range(200)}
    assert len(seen) == 200
    for verifier in seen:
        assert B64URL_43.match(verifier)
        padded = verifier + "=" * (-len(verifier) % 4)
        assert len(base64.urlsafe_b64decode(padded)) == 32
        assert B64URL_43.match(challenge_for(verifier))


@pytest.mark.parametrize(
    "value", ["/sandbox", "/sandbox/settings", "/sandbox?byos=ok&x=1", "/a/b#frag", "/%2F%2Fx"]
)
def test_same_site_paths_are_kept(value):
    assert check_redirect(value) == value


@pytest.mark.parametrize("value", [None, ""])
def test_missing_redirect_means_the_default(value):
    assert check_redirect(value) == DEFAULT_POST_CONNECT_REDIRECT == "/sandbox?byos=ok"


@pytest.mark.parametrize(
    "value",
    [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\/evil.example",
        "https://evil.example",
        "HTTPS://evil.example",
        "javascript:alert(1)",
        "data:text/html,hi",
        "evil.example/x",
        "sandbox",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nLocation: x",
        " /sandbox",
        "/sandbox ",
        "/\u2028x",
        "/\u200bx",
        "/\x7f",
        "/" * 1 + "x" * 2048,
        0,
        True,
        {"path": "/"},
    ],
)
def test_off_site_or_odd_redirects_are_refused(value):
    with pytest.raises(Invalid) as caught:
        check_redirect(value)
    assert caught.value.code == "invalid-redirect"
    assert "post_connect_redirect" in caught.value.detail


@given(st.text(max_size=60))
def test_accepted_redirects_stay_on_this_site(value):
    """Whatever is accepted, a browser resolves it against our origin to our origin."""
    try:
        kept = check_redirect(value)
    except Invalid:
        return
    base = "https://sandbox.acme.example/api/v1/sandbox/byos/claude-code/callback"
    resolved = urlsplit(urljoin(base, kept))
    assert resolved.scheme == "https"
    assert resolved.netloc == "sandbox.acme.example"
    # the way browsers read it: backslashes as slashes, tabs and newlines dropped
    browserish = re.sub(r"[\t\n\r]", "", kept).replace("\\", "/")
    assert not browserish.startswith("//")


@given(st.sampled_from(["/", "//", "\\", "\t", "\n", ":", "@", "x", "."]).map(str) | st.text())
def test_prefixes_browsers_treat_as_hosts_are_refused(tail):
    for head in ("//", "/\\", "\\\\", "/\t/"):
        with pytest.raises(Invalid):
            check_redirect(head + tail)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def issue(states: FlowStates, sub: str = "u") -> str:
    return states.issue(
        sub=sub, verifier="v", redirect_uri="http://x/cb", post_connect_redirect="/"
    )


def test_states_are_uuid4_single_use():
    states = FlowStates(clock=Clock())
    state = issue(states)
    assert uuid.UUID(state).version == 4
    flow = states.take(state)
    assert flow is not None and flow.sub == "u" and flow.verifier == "v"
    assert states.take(state) is None
    assert states.take("never-issued") is None


def test_states_expire_after_the_ttl():
    clock = Clock()
    states = FlowStates(clock=clock, ttl=600)
    first, second = issue(states), issue(states, "w")
    clock.now += 599.9
    assert states.take(first) is not None
    clock.now += 0.1
    assert states.take(second) is None
    # expired ones are purged on the next issue
    stale = issue(states, "z")
    clock.now += 601
    issue(states, "y")
    assert len(states) == 1
    assert states.take(stale) is None


def test_one_user_cannot_grow_the_table_or_evict_others():
    states = FlowStates(clock=Clock(), max_pending=100, max_per_user=3)
    other = issue(states, "other")
    mine = [issue(states, "me") for _ in range(50)]
    assert len(states) == 4
    assert states.take(other) is not None
    assert [states.take(s) is not None for s in mine[-4:]] == [False, True, True, True]


def test_the_table_is_bounded_overall():
    states = FlowStates(clock=Clock(), max_pending=10, max_per_user=5)
    issued = [issue(states, f"user-{i}") for i in range(25)]
    assert len(states) == 10
    assert states.take(issued[0]) is None  # the oldest went first
    assert states.take(issued[-1]) is not None


def test_drop_user_forgets_only_that_user():
    states = FlowStates(clock=Clock())
    mine, theirs = issue(states, "me"), issue(states, "them")
    states.drop_user("me")
    assert states.take(mine) is None
    assert states.take(theirs) is not None


def test_the_verifier_is_not_in_repr():
    states = FlowStates(clock=Clock())
    flow = states.take(
        states.issue(
            sub="u", verifier="secret-verifier", redirect_uri="r", post_connect_redirect="/"
        )
    )
    assert "secret-verifier" not in repr(flow)
