"""Embedded mode issues a new sandbox's gateway token when it is created, not when its
agent first starts (issue 10, "create → first agent byte": the ledger's write ran between
Ready and the spawn), and revokes it when the sandbox is deleted."""

from __future__ import annotations

import time

from openova_sandbox.domain.principal import Principal
from openova_sandbox.services.sessions import CreateRequest

SESSIONS = "/api/v1/sandbox/sessions"


def _until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_token_is_issued_at_create_without_an_attach(make_api):
    api = make_api(store="sql")
    tokens = api.deps.terminals.tokens
    assert tokens is not None
    caller = Principal(sub="user-sub-abcdef12", email="dev@acme.com", org="acme")
    sandbox = api.deps.sessions.build(caller, CreateRequest(agent="aider", name="early"))
    assert not tokens.issued(sandbox)

    created = api.http.post(SESSIONS, headers=api.auth(), json={"agent": "aider", "name": "early"})
    assert created.status_code == 201
    assert _until(lambda: tokens.issued(sandbox))  # nobody attached

    deleted = api.http.delete(f"{SESSIONS}/early", headers=api.auth())
    assert deleted.status_code == 204
    assert _until(lambda: api.http.get(f"{SESSIONS}/early", headers=api.auth()).status_code == 404)
    assert not tokens.issued(sandbox)
