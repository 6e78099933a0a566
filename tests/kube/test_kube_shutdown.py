"""Kubernetes mode stops when asked (issue 13): a cancelled watch of the kube store ends
with the cancellation, so the API's informer stops instead of re-listing forever and
`sandbox api` exits on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contract.conftest import build_sandbox
from openova_sandbox.services.resources import SandboxInformer
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube

from .test_kube_shared_auth import new_key_pem

SANDBOX = str(Path(sys.executable).with_name("sandbox"))
# what every replica shares (test_kube_shared_auth.py): the issuer's key and the cookie
# secret
KUBE_AUTH_ENV = {"SANDBOX_ISSUER_KEY": new_key_pem(), "SANDBOX_COOKIE_SECRET": "c" * 43}


@pytest.fixture
async def store(kube: FakeKube) -> AsyncIterator[KubeStore]:
    store = KubeStore(kubeconfig_path=str(kube.kubeconfig_path), budget=2.0)
    await store.start()
    await store.create(build_sandbox("alpha", "acme"))
    yield store
    await store.close()


async def test_a_cancelled_watch_ends_with_the_cancellation(store: KubeStore) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in store.watch(None):
            started.set()  # the listing's ADDED; then the watch waits for the next event

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await started.wait()
    await asyncio.sleep(0)  # let it reach the wait on the open stream
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task  # not RuntimeError("aclose(): asynchronous generator is already running")


async def test_the_informer_stops_on_the_kube_store(store: KubeStore, kube: FakeKube) -> None:
    informer = SandboxInformer(store, backoff_initial=0.05)
    await informer.start()
    assert await informer.wait_synced(5)
    # the watch is open once the fake has been asked for the list and then the watch
    async with asyncio.timeout(5):
        while sum(m == "GET" and p.endswith("/sandboxes") for m, p in kube.requests) < 2:
            await asyncio.sleep(0.01)
    lists_before = informer.relists
    async with asyncio.timeout(5):
        await informer.stop()
    assert not informer.running
    assert informer.relists == lists_before  # stopped, not re-listed after a failure


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], port: int, what: str) -> float:
    """Until the server's /readyz answers 200 (it must not exit first); the deadline it
    was given, for the waits that follow."""
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return deadline
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what} never became ready"
        time.sleep(0.1)


def test_sandbox_api_exits_on_sigterm(kube: FakeKube, tmp_path: Path) -> None:
    """The real process, against the fake API server: ready (its informer listed and
    watching), then SIGTERM, then gone well within a pod's 30 s grace period."""
    port = _free_port()
    env = {
        **os.environ,
        "SANDBOX_STORE": "kube",
        "KUBECONFIG": str(kube.kubeconfig_path),
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        **KUBE_AUTH_ENV,
    }
    proc = subprocess.Popen(
        [SANDBOX, "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = wait_ready(proc, port, "sandbox api")
        # the informer's watch is open: the list and then the watch were asked for
        while sum(m == "GET" and p.endswith("/sandboxes") for m, p in kube.requests) < 2:
            assert time.monotonic() < deadline, "the informer never watched"
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
        # uvicorn re-raises the signal once it has shut down cleanly
        assert code in (0, -signal.SIGTERM), output
        assert took < 10, f"took {took:.1f}s"
        assert "already running" not in output
        assert "relisting" not in output and "retrying" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sandbox_operator_exits_on_sigterm_and_hands_the_lease_over(
    kube: FakeKube, tmp_path: Path
) -> None:
    """The real process: it leads (the Lease names it), then SIGTERM: kopf stops, the
    lease is released for the other replica, and the process is gone in time."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "catalyst-system"}})
    lease = (
        f"{kube.url}/apis/coordination.k8s.io/v1/namespaces/catalyst-system/leases/sandbox-operator"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
        "KUBECONFIG": str(kube.kubeconfig_path),
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "SANDBOX_GIT_BASE_URL": "https://gitea.example.com",
        "POD_NAME": "operator-0",
    }
    proc = subprocess.Popen(
        [SANDBOX, "operator", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30

        def holder() -> str:
            answer = httpx.get(lease, timeout=2)
            return (
                str(answer.json()["spec"].get("holderIdentity") or "")
                if answer.status_code == 200
                else ""
            )

        while not holder().startswith("operator-0"):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the operator never took the lease"
            time.sleep(0.1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        took = time.monotonic() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code in (0, -signal.SIGTERM), output
        assert took < 10, f"took {took:.1f}s"
        assert holder() == ""  # released: the other replica takes over on its next try
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sandbox_gateway_exits_on_sigterm(tmp_path: Path) -> None:
    """The model gateway's Deployment gets the same 30 s grace: it is gone well within."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
        "SANDBOX_STORE": "sql",
        "SANDBOX_DATA_DIR": str(tmp_path / "data"),
        "SANDBOX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
    }
    proc = subprocess.Popen(
        [SANDBOX, "gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(proc, port, "sandbox gateway")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code in (0, -signal.SIGTERM), output
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
