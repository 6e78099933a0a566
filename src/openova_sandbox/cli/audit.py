"""`sandbox audit verify|export`: the audit log of a data dir's database, checked or
written out by the operator (no server needed, none contacted).

``verify`` walks each org's chain (docs/api.md, "Audit") and reports the first broken
link; with ``--file`` it checks an export instead (``GET /api/v1/sandbox/audit?
format=jsonl``, or ``sandbox audit export``), so an org admin can check what they
downloaded. It exits 1 when a chain is broken. The head it prints (the last record's
number and hash) is what to keep elsewhere: removing the newest records leaves a
shorter valid chain, which only a head kept elsewhere shows.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ..config import Settings, load_settings
from ..domain.audit import AuditQuery, AuditRecord, ChainReport, verify
from ..domain.errors import SandboxError
from ..services.audit import AuditLog, make_audit_log
from .console import LazyConsole, escape

app = typer.Typer(
    name="audit",
    help="Check or export the audit log (who did what) of this server's database.",
    no_args_is_help=True,
)
err = LazyConsole(stderr=True)
out = LazyConsole()

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default $SANDBOX_DATA_DIR or .sandbox)"),
]
Orgs = Annotated[
    list[str] | None,
    typer.Option("--org", help="Only this org's chain (repeatable; default every org)"),
]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(data_dir: Path | None) -> Settings:
    try:
        return load_settings(data_dir=data_dir)
    except SandboxError as exc:
        fail(exc.detail)


def _read_file(path: str) -> dict[str, list[AuditRecord]]:
    """The records of an export, per org, in file order."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    chains: dict[str, list[AuditRecord]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = AuditRecord.from_dict(json.loads(line))
        except (ValueError, SandboxError) as exc:
            detail = exc.detail if isinstance(exc, SandboxError) else str(exc)
            fail(f"{path}, line {number}: {detail}")
        chains.setdefault(record.org, []).append(record)
    return chains


def _check_file(path: str, orgs: list[str] | None) -> list[ChainReport]:
    """Each org's records as exported: an export holds an org's whole chain from its
    first record, so a gap (a filtered export too) is a broken link."""
    chains = _read_file(path)
    wanted = orgs or sorted(chains)
    return [verify(org, chains.get(org, [])) for org in wanted]


async def _check_database(settings: Settings, orgs: list[str] | None) -> list[ChainReport]:
    log = make_audit_log(settings)
    await log.store.start()
    try:
        return await log.verify(orgs)
    finally:
        await log.stop()


def _print(reports: Iterable[ChainReport], *, as_json: bool) -> bool:
    reports = list(reports)
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "org": r.org,
                "ok": r.ok,
                "records": r.records,
                "headSeq": r.head_seq,
                "headHash": r.head_hash,
                "brokenSeq": r.broken_seq,
                "reason": r.reason or None,
            }
            for r in reports
        ]
        print(json.dumps(rows, indent=2))
    else:
        if not reports:
            out.print("no audit records")
        for r in reports:
            name = escape(r.org or "(no org)")
            if r.ok:
                out.print(
                    f"{name}: intact, {r.records} records; head {r.head_seq} {r.head_hash}",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                out.print(
                    f"[red]{name}: broken at record {r.broken_seq}[/red]: {escape(r.reason)}"
                    f" (last good: {r.head_seq} {r.head_hash})",
                    highlight=False,
                    soft_wrap=True,
                )
    return all(r.ok for r in reports)


@app.command("verify")
def verify_cmd(
    data_dir: DataDir = None,
    org: Orgs = None,
    file: Annotated[
        str | None,
        typer.Option("--file", help="Check an exported JSON lines file instead (- : stdin)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Check every org's hash chain; print each head; exit 1 at a broken link."""
    if file is not None:
        reports = _check_file(file, org)
    else:
        settings = _settings(data_dir)
        try:
            reports = asyncio.run(_check_database(settings, org))
        except SandboxError as exc:
            fail(exc.detail)
    if not _print(reports, as_json=as_json):
        raise typer.Exit(1)


async def _export(settings: Settings, org: str) -> None:
    log: AuditLog = make_audit_log(settings)
    await log.store.start()
    try:
        after = 0
        while True:
            query = AuditQuery(org=org, after=after, limit=500, newest_first=False)
            batch = await log.query(query)
            for record in batch:
                sys.stdout.write(json.dumps(record.to_dict(), separators=(",", ":")) + "\n")
            if len(batch) < 500:
                return
            after = batch[-1].seq
    finally:
        await log.stop()


@app.command("export")
def export_cmd(
    org: Annotated[str, typer.Option("--org", help="The org whose chain to write")],
    data_dir: DataDir = None,
) -> None:
    """Write one org's whole chain as JSON lines (oldest first) on stdout."""
    settings = _settings(data_dir)
    try:
        asyncio.run(_export(settings, org))
    except SandboxError as exc:
        fail(exc.detail)
