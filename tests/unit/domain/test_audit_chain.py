"""The audit chain's pure rules (domain/audit.py): the canonical form a record's hash is
taken over (fixed by a known value, so it cannot drift silently and break every
exported chain), what verify reports, and what is kept of a caller's entry."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from openova_sandbox.domain.audit import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    chain,
    clean_text,
    record_hash,
    verify,
)
from openova_sandbox.domain.errors import Invalid

AT = datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=UTC)
ENTRY = AuditEntry(
    action="sandbox.create",
    org="acme",
    actor_sub="sub-1",
    actor_email="dév@acme.com",
    target="sandbox/a",
    client="10.0.0.7",
    detail={"agent": "aider", "n": 2},
)


def test_the_hash_is_sha256_of_the_documented_canonical_json() -> None:
    canonical = (
        '{"action":"sandbox.create","actor":{"email":"d\\u00e9v@acme.com","sub":"sub-1"},'
        '"at":"2026-12-06T10:00:00.123456Z","client":"10.0.0.7","detail":{"agent":"aider",'
        '"n":2},"org":"acme","outcome":"success","prev":"' + GENESIS + '","seq":1,'
        '"target":"sandbox/a"}'
    )
    expected = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    assert record_hash(ENTRY, seq=1, at=AT, prev=GENESIS) == expected
    # the value itself, as an exported chain holds it
    assert expected == "a2915d707b273e0eea8783b453e0f75aaaefeb8d4ebcf0f9e6ed8a060e405615"


def _chain(n: int) -> list[AuditRecord]:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        record = chain(ENTRY, seq=seq, at=AT, prev=prev)
        records.append(record)
        prev = record.hash
    return records


def test_verify_walks_the_chain_and_names_the_first_broken_link() -> None:
    records = _chain(4)
    report = verify("acme", records)
    assert (report.ok, report.records, report.head_seq, report.head_hash) == (
        True,
        4,
        4,
        records[-1].hash,
    )
    assert verify("acme", []).head_hash == GENESIS

    changed = list(records)
    changed[2] = AuditRecord(**{**records[2].__dict__, "client": "10.0.0.8"})
    broken = verify("acme", changed)
    assert (broken.broken_seq, broken.head_seq) == (3, 2) and "changed" in broken.reason

    assert verify("acme", records[1:]).broken_seq == 2  # the first one missing
    assert verify("globex", records).reason.startswith("record of org 'acme'")


def test_an_exported_line_reads_back_exactly_and_junk_is_refused() -> None:
    (record,) = _chain(1)
    line = json.dumps(record.to_dict())
    assert AuditRecord.from_dict(json.loads(line)) == record
    for junk in ({}, {**record.to_dict(), "seq": "1"}, {**record.to_dict(), "at": "today"}):
        with pytest.raises(Invalid):
            AuditRecord.from_dict(junk)


def test_an_entry_keeps_what_can_be_stored_and_no_secret() -> None:
    entry = AuditEntry(
        action="x" * 100,
        org="acme\x00",
        target="t\ud800",
        outcome="weird",  # type: ignore[arg-type]
        detail={"Authorization": "Bearer x", "sessionKey": "k", "ok": "y", 3: "z"},  # type: ignore[dict-item]
    ).cleaned()
    assert entry.action == "x" * 64
    assert entry.org == "acme\ufffd"
    assert entry.target == "t?"
    assert entry.outcome == "failure"
    assert entry.detail == {"ok": "y"}
    assert clean_text("é" * 10, 3) == "ééé"
