"""Share links, the pure part: request rules, token hashing, expiry, the annotation."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from openova_sandbox.domain.errors import Invalid
from openova_sandbox.domain.share import (
    ANNOTATION_SHARES,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    Share,
    ShareRequest,
    allows_input,
    find_by_token,
    hash_token,
    live,
    parse_request,
    read_shares,
    write_shares,
)

NOW = datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=UTC)


def issue(mode: str = "read", ttl: int = 3600, now: datetime = NOW) -> tuple[Share, str]:
    return Share.issue(ShareRequest(mode=mode, ttl_seconds=ttl), created_by="a@acme.com", now=now)


# --- the create body -------------------------------------------------------------------


def test_defaults_read_for_an_hour_and_unknown_fields_are_ignored():
    assert parse_request({}) == ShareRequest("read", 3600)
    assert parse_request({"mode": None, "ttlSeconds": None}) == ShareRequest("read", 3600)
    assert parse_request({"mode": "write", "ttlSeconds": 60, "colour": "red"}) == ShareRequest(
        "write", 60
    )
    assert parse_request({"ttlSeconds": MAX_TTL_SECONDS}).ttl_seconds == 604800
    assert parse_request({"ttlSeconds": 120.0}).ttl_seconds == 120  # JSON 120.0 is 120


@pytest.mark.parametrize("mode", ["admin", "READ", "", 1, True, ["read"], {"m": 1}])
def test_a_mode_other_than_read_or_write_is_refused(mode):
    with pytest.raises(Invalid) as caught:
        parse_request({"mode": mode})
    assert caught.value.code == "invalid-mode"
    assert '"read" or "write"' in caught.value.detail


@pytest.mark.parametrize(
    "ttl", [MIN_TTL_SECONDS - 1, MAX_TTL_SECONDS + 1, 0, -5, 10**30, "3600", 90.5, True, [60]]
)
def test_a_ttl_out_of_range_or_not_an_integer_is_refused(ttl):
    with pytest.raises(Invalid) as caught:
        parse_request({"ttlSeconds": ttl})
    assert caught.value.code == "invalid-ttl"
    assert "ttlSeconds must be" in caught.value.detail
    assert "60" in caught.value.detail and "604800" in caught.value.detail


# --- tokens -----------------------------------------------------------------------------


def test_only_the_sha256_of_the_token_is_kept():
    share, token = issue()
    assert len(token) == 32  # token_urlsafe(24)
    assert share.token_hash == "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    stored = json.dumps(share.to_stored())
    assert token not in stored
    assert token not in json.dumps(share.to_item()) and "sha256" not in json.dumps(share.to_item())
    assert share.matches(token)
    assert (
        not share.matches(token[:-1]) and not share.matches("") and not share.matches(token + "x")
    )


def test_every_issue_is_a_fresh_token_and_id():
    (a, ta), (b, tb) = issue(), issue()
    assert ta != tb and a.id != b.id and a.token_hash != b.token_hash


def test_find_by_token_picks_the_share_the_token_opens():
    (a, ta), (b, tb) = issue(), issue("write")
    assert find_by_token([a, b], tb) == b
    assert find_by_token([a, b], ta) == a
    assert find_by_token([a, b], "nope") is None
    assert hash_token("x") != hash_token("y")


# --- expiry and modes --------------------------------------------------------------------


def test_expiry_is_whole_seconds_after_creation_and_exclusive():
    share, _ = issue(ttl=60)
    assert share.created_at == NOW.replace(microsecond=0)
    assert share.expires_at == share.created_at + timedelta(seconds=60)
    assert not share.expired(share.expires_at - timedelta(microseconds=1))
    assert share.expired(share.expires_at)
    assert live([share], share.expires_at) == []
    assert live([share], NOW) == [share]


def test_only_write_takes_input():
    assert allows_input("write")
    assert not allows_input("read") and not allows_input("") and not allows_input("WRITE")


# --- the annotation ---------------------------------------------------------------------


def test_shares_round_trip_through_the_annotation_oldest_first():
    later, _ = issue(now=NOW + timedelta(minutes=1))
    first, _ = issue("write")
    annotations = write_shares({"other": "kept"}, [later, first])
    assert annotations["other"] == "kept"
    assert read_shares(annotations) == [first, later]
    assert write_shares(annotations, []) == {"other": "kept"}  # none left: the key goes


@pytest.mark.parametrize("text", ["", "not json", "{}", '"x"', "null", "[1, 2]"])
def test_an_unreadable_annotation_holds_no_shares(text):
    assert read_shares({ANNOTATION_SHARES: text}) == []


def test_unusable_entries_are_skipped_and_the_rest_kept():
    good, _ = issue()
    entry = good.to_stored()
    broken = [
        {**entry, "mode": "admin"},
        {**entry, "tokenHash": "plain-token"},
        {**entry, "expiresAt": "tomorrow"},
        {**entry, "id": ""},
        {k: v for k, v in entry.items() if k != "createdAt"},
        "string",
    ]
    assert read_shares({ANNOTATION_SHARES: json.dumps([*broken, entry])}) == [good]
