"""What the resource-surface tests share: the routes, four callers in two orgs, a wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

BASE = "/api/v1/sovereigns"
SESSIONS = "/api/v1/sandbox/sessions"
STREAM = f"{BASE}/local/k8s/stream"
LIST = f"{BASE}/local/k8s/sandboxes"

ALICE = {"sub": "alice-sub-0001", "email": "alice@acme.com", "org": "acme"}
BOB = {"sub": "bob-sub-0002", "email": "bob@acme.com", "org": "acme"}
ADMIN = {"sub": "root-sub-0003", "email": "root@acme.com", "org": "acme", "roles": ("org-admin",)}
CAROL = {"sub": "carol-sub-0004", "email": "carol@globex.com", "org": "globex"}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
