"""The console's OIDC sessions assembled for the settings: which backend keeps them; and
the token cookies' sign-outs (auth/signouts.py), kept in the same place.

The store's database, as for the gateway's ledger, the access tokens and the audit log
(SQLite in the data dir, or ``SANDBOX_DATABASE_URL``: in Kubernetes mode every API
replica must see every session), memory with ``SANDBOX_STORE=memory``. Here, in the
composition layer, because the service (``auth``) and the SQL adapter (``store``) do
not know each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ..auth.oidc_sessions import (
    MemorySessionBackend,
    OidcSessions,
    SessionBackend,
    build_oidc_sessions,
)
from ..auth.signouts import SignOuts
from ..config import Settings

log = structlog.get_logger(__name__)


def session_backend(settings: Settings) -> SessionBackend:
    if settings.store == "memory":
        return MemorySessionBackend()
    from ..store.sql_oidc_sessions import SqlSessionBackend

    if settings.store == "kube" and not settings.database_url:
        log.warning(
            "oidc_sessions_on_local_sqlite",
            detail="set SANDBOX_DATABASE_URL to a database every API replica shares, or a "
            "console session signed in on one replica is unknown to the others",
        )
    return SqlSessionBackend(settings.effective_database_url)


def oidc_sessions_for(
    settings: Settings,
    *,
    cookie_secret: str,
    validate_bearer: Callable[[str], Awaitable[dict[str, Any]]],
) -> OidcSessions | None:
    """``None`` without an OIDC client (nothing is opened then)."""
    if not (settings.oidc_issuer.strip() and settings.oidc_client_id.strip()):
        return None
    return build_oidc_sessions(
        settings,
        cookie_secret=cookie_secret,
        validate_bearer=validate_bearer,
        backend=session_backend(settings),
    )


def signouts_for(settings: Settings) -> SignOuts:
    """Token cookies signed out of: checked in memory, recorded in the store's database
    as the OIDC sessions are (so a sign-out outlives a restart); memory alone with
    ``SANDBOX_STORE=memory``, where nothing outlives one."""
    if settings.store == "memory":
        return SignOuts()
    from ..store.sql_signouts import SqlSignOutBackend

    if settings.store == "kube" and not settings.database_url:
        log.warning(
            "signouts_on_local_sqlite",
            detail="set SANDBOX_DATABASE_URL to a database every API replica shares, or a "
            "token cookie signed out through one replica is unknown to the others",
        )
    return SignOuts(backend=SqlSignOutBackend(settings.effective_database_url))
