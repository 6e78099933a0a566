"""Faults a real SQL database is made to have, for the tests (SQLite or PostgreSQL, by
the URL's scheme)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import text

from openova_sandbox.store.sql_engine import create_engine, parse_url


async def refuse_signout_inserts(url: str) -> Callable[[], Awaitable[None]]:
    """The database refuses every new sign-out record (a trigger raising, as a full disk
    or a read-only database would); returns what lifts that again."""
    sqlite = url.startswith("sqlite")
    install = (
        [
            "CREATE TRIGGER refuse BEFORE INSERT ON sandbox_signed_out_tokens "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        ]
        if sqlite
        else [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON sandbox_signed_out_tokens "
            "FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]
    )
    lift = (
        ["DROP TRIGGER refuse"] if sqlite else ["DROP TRIGGER refuse ON sandbox_signed_out_tokens"]
    )

    async def run(statements: list[str]) -> None:
        engine = create_engine(parse_url(url), echo=False, connect_timeout=5)
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
        finally:
            await engine.dispose()

    await run(install)
    return lambda: run(lift)
