"""`sandbox audit verify|export` as an operator runs them, on a data dir's SQLite
database: an intact chain and its head, the first broken link after a record is
changed (exit 1), an export that verifies offline, and an edited export that does not."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from openova_sandbox.domain.principal import Principal
from openova_sandbox.services.audit import AuditLog
from openova_sandbox.store.sql_audit import SqlAuditStore
from support.cli import run_sandbox

DEV = Principal(sub="sub-dev", email="dev@acme.com", org="acme")
OTHER = Principal(sub="sub-x", email="x@globex.com", org="globex")


def _write(data_dir: Path) -> str:
    async def run() -> str:
        log = AuditLog(SqlAuditStore(f"sqlite+aiosqlite:///{data_dir / 'sandbox.db'}"))
        await log.start()
        last = None
        for i in range(5):
            last = await log.record("sandbox.create", DEV, target=f"sandbox/s{i}")
        await log.record("sandbox.create", OTHER, target="sandbox/g")
        await log.stop()
        assert last is not None
        return last.hash

    return asyncio.run(run())


def _env(data_dir: Path) -> dict[str, str]:
    return {"SANDBOX_DATA_DIR": str(data_dir), "SANDBOX_STORE": "sql"}


def test_verify_reports_each_chain_and_the_first_broken_link(tmp_path: Path) -> None:
    data = tmp_path / "data"
    head = _write(data)
    ok = run_sandbox("audit", "verify", env=_env(data))
    assert ok.returncode == 0, ok.stderr
    assert f"acme: intact, 5 records; head 5 {head}" in ok.stdout
    assert "globex: intact, 1 records" in ok.stdout

    as_json = run_sandbox("audit", "verify", "--org", "acme", "--json", env=_env(data))
    assert as_json.returncode == 0, as_json.stderr
    (row,) = json.loads(as_json.stdout)
    assert row == {
        "org": "acme",
        "ok": True,
        "records": 5,
        "headSeq": 5,
        "headHash": head,
        "brokenSeq": None,
        "reason": None,
    }

    with sqlite3.connect(data / "sandbox.db") as db:
        db.execute("DROP TRIGGER sandbox_audit_no_update")
        db.execute("UPDATE sandbox_audit SET actor_email = 'eve@acme.com' WHERE seq = 3")
    broken = run_sandbox("audit", "verify", env=_env(data))
    assert broken.returncode == 1
    assert "acme: broken at record 3" in broken.stdout
    assert "the record was changed" in broken.stdout
    assert "globex: intact" in broken.stdout


def test_an_export_verifies_offline_and_an_edit_shows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(data)
    exported = run_sandbox("audit", "export", "--org", "acme", env=_env(data))
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]
    path = tmp_path / "acme.jsonl"
    path.write_text(exported.stdout)
    ok = run_sandbox("audit", "verify", "--file", str(path), env=_env(tmp_path / "none"))
    assert ok.returncode == 0, ok.stderr
    assert "acme: intact, 5 records" in ok.stdout

    edited = json.loads(lines[1])
    edited["outcome"] = "denied"
    path.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    bad = run_sandbox("audit", "verify", "--file", str(path))
    assert bad.returncode == 1
    assert "acme: broken at record 2" in bad.stdout

    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # a line removed
    gap = run_sandbox("audit", "verify", "--file", str(path))
    assert gap.returncode == 1 and "broken at record 3" in gap.stdout

    path.write_text("not json\n")
    junk = run_sandbox("audit", "verify", "--file", str(path))
    assert junk.returncode == 1 and "line 1" in junk.stderr
