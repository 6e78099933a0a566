"""What the informer tests share: a Sandbox maker, a polling wait, and fixtures for a
real in-memory store and informers stopped at the end of each test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from openova_sandbox.domain.model import ObjectMeta, Quota, Sandbox, SandboxSpec


def sandbox(name: str, namespace: str = "acme") -> Sandbox:
    return Sandbox(
        metadata=ObjectMeta(name=name, namespace=namespace, labels={"app": name}),
        spec=SandboxSpec(owner_email="dev@acme.com", org_slug="acme", quota=Quota()),
    )


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
