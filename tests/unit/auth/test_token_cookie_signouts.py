"""Token cookies signed out of (auth/signouts.py): remembered by ``(sub, jti)`` until the
token expires, waiters woken at once, bounded; ``jwt_id`` reads a real token's ``jti``.
Their database (restarts, pruning, a failed write) is tested on SQLite and PostgreSQL in
tests/contract/test_signout_records.py and tests/integration/api/test_token_cookie_logout.py."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from openova_sandbox.auth import signouts
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.auth.signouts import SignOuts, issued_here_at, jwt_id


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_sign_out_is_remembered_for_its_token_until_it_expires() -> None:
    clock = Clock()
    ended = SignOuts(clock)
    await ended.end("ada", "j1", 1_100)
    assert ended.ended("ada", "j1")
    assert not ended.ended("ada", "j2")  # another sign-in of the same user
    assert not ended.ended("bob", "j1")  # the same id from someone else's token
    clock.now = 1_100
    assert not ended.ended("ada", "j1")  # expired: the grant has expired too
    await ended.end("ada", "j3", 900)  # an expired token: nothing to remember
    await ended.end("ada", "", 2_000)  # a token without an id: nothing to remember
    assert not ended.ended("ada", "j3") and not ended.ended("ada", "")


async def test_at_most_so_many_are_kept_the_first_to_expire_go_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signouts, "MAX_REMEMBERED", 3)
    clock = Clock()
    ended = SignOuts(clock)
    for jti, exp in (("a", 1_500), ("b", 1_200), ("c", 1_800)):
        await ended.end("ada", jti, exp)
    await ended.end("ada", "d", 1_900)
    assert [ended.ended("ada", j) for j in "abcd"] == [True, False, True, True]


async def test_a_waiter_wakes_at_the_sign_out_and_at_once_after_it() -> None:
    ended = SignOuts()
    waiting = asyncio.ensure_future(ended.wait("ada", "j1"))
    other = asyncio.ensure_future(ended.wait("ada", "j2"))
    await asyncio.sleep(0)
    assert not waiting.done()
    await ended.end("ada", "j1", 2e10)
    async with asyncio.timeout(5):
        await waiting
    assert not other.done()
    other.cancel()
    async with asyncio.timeout(5):
        await ended.wait("ada", "j1")  # already signed out of


def test_jwt_id_reads_a_real_tokens_id_and_nothing_else() -> None:
    issuer = EmbeddedIssuer.generate()
    token = issuer.mint(sub="ada", email="ada@acme.com", org="acme", ttl=timedelta(minutes=5))
    jti = jwt_id(token)
    assert jti and jti != jwt_id(issuer.mint(sub="ada", email="ada@acme.com", org="acme"))
    for text in ("", "osb_pat_abc", "a.b", "a.!!!.c", "a.bnVsbA.c", f"{token}.sig"):
        assert jwt_id(text) == ""


def test_issued_here_at_is_the_iat_of_this_servers_own_tokens_only() -> None:
    """While the stored sign-outs are not loaded, only this server's own tokens (one
    clock) are answered by their ``iat``: another issuer's clock may run ahead of ours."""
    ours, theirs = EmbeddedIssuer.generate(), EmbeddedIssuer.generate()
    before = time.time()
    token = ours.mint(sub="ada", email="ada@acme.com", org="acme")
    at = issued_here_at(token, ours.issuer)
    assert at is not None and int(before) <= at <= time.time()
    other = theirs.mint(sub="ada", email="ada@acme.com", org="acme")
    assert issued_here_at(other, ours.issuer) is None
    assert issued_here_at(token, None) is None and issued_here_at(token, "") is None
    for text in ("", "osb_pat_abc", "a.b", "a.!!!.c", "a.bnVsbA.c"):
        assert issued_here_at(text, ours.issuer) is None
