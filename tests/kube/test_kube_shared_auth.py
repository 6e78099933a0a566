"""One issuer and one cookie secret for every API replica and every sandbox pod in
Kubernetes mode (issue 13): the replicas share the embedded issuer's key
(``SANDBOX_ISSUER_KEY``, Secret sandbox-issuer-key) and ``SANDBOX_COOKIE_SECRET``; the
operator points each pod's terminal server at the API's JWKS; and each server refuses
to start without what it needs, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_api, shared_auth_problems
from openova_sandbox.auth import issuer as issuer_module
from openova_sandbox.auth.authenticator import build_authenticator
from openova_sandbox.auth.issuer import EmbeddedIssuer
from openova_sandbox.config import load_settings
from openova_sandbox.controller.kube import operator as operator_module
from openova_sandbox.controller.kube.operator import pod_jwks_url, render_config, startup_problems
from openova_sandbox.controller.kube.render import render_children
from openova_sandbox.domain.errors import Invalid, Unauthenticated
from openova_sandbox.store.kube import KubeStore
from openova_sandbox.testing.kubeapi import FakeKube
from openova_sandbox.testing.server import serve_in_thread

from .samples import sandbox

SANDBOX = str(Path(sys.executable).with_name("sandbox"))


def new_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_the_operator_knows_where_the_api_publishes_its_keys() -> None:
    assert operator_module.JWKS_PATH == issuer_module.JWKS_PATH


async def test_two_replicas_and_a_pod_trust_the_same_tokens(kube: FakeKube, tmp_path: Path) -> None:
    pem = new_key_pem()
    common = {
        "store": "kube",
        "issuer_key": pem,
        "cookie_secret": "c" * 43,
        "git_base_url": "https://gitea.example.com",
    }
    replicas = [
        build_api(
            load_settings(data_dir=tmp_path / f"replica-{i}", **common),
            store=KubeStore(kubeconfig_path=str(kube.kubeconfig_path)),
        )
        for i in (1, 2)
    ]
    issuers = [deps.issuer for deps in replicas]
    assert issuers[0] is not None and issuers[1] is not None
    assert issuers[0].kid == issuers[1].kid  # the shared key, not one per data dir
    assert not (tmp_path / "replica-1" / "issuer").exists()  # no key of its own made
    token = issuers[0].mint(sub="u-1", email="dev@acme.com", org="acme")
    with (
        serve_in_thread(create_app(replicas[0])) as one,
        serve_in_thread(create_app(replicas[1])) as two,
    ):
        for server in (one, two):
            answer = httpx.get(
                f"{server.url}/api/v1/sandbox/sessions",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        # the pod's terminal server, as the operator configures it, admits the token
        # with the keys it fetches from the API (here: replica two)
        operator_settings = load_settings(
            store="kube",
            kube_api_url=two.url,
            database_url="sqlite+aiosqlite:///x.db",
            git_base_url="https://gitea.example.com",
        )
        pod_url = pod_jwks_url(operator_settings)
        assert pod_url == f"{two.url}/.well-known/jwks.json"
        children = render_children(sandbox(), "ns", render_config(operator_settings))
        (sts,) = [c for c in children if c["kind"] == "StatefulSet"]
        env = {
            e["name"]: e.get("value")
            for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["SANDBOX_JWKS_URL"] == pod_url
        pod = build_authenticator(load_settings(jwks_url=env["SANDBOX_JWKS_URL"]), issuer=None)
        principal = await pod.authenticate(token)
        assert principal.email == "dev@acme.com"
        # a token of another key is refused there
        stranger = EmbeddedIssuer.generate().mint(sub="u-1", email="dev@acme.com", org="acme")
        with pytest.raises(Unauthenticated):
            await pod.authenticate(stranger)


def test_an_external_issuer_is_passed_to_pods_as_configured() -> None:
    external = load_settings(oidc_issuer="https://id.example.com/realms/x")
    assert pod_jwks_url(external) == ""  # discovered from the issuer by the pod
    config = render_config(external)
    assert config.oidc_issuer == "https://id.example.com/realms/x"


def test_a_bad_issuer_key_is_refused_naming_it() -> None:
    with pytest.raises(Invalid, match="SANDBOX_ISSUER_KEY"):
        EmbeddedIssuer.from_pem("not a key")
    rsa_like = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(Invalid, match="P-256"):
        EmbeddedIssuer.from_pem(rsa_like.decode())


def test_what_the_api_lacks_is_named() -> None:
    problems = " ".join(shared_auth_problems(load_settings(store="kube")))
    for name in ("SANDBOX_OIDC_ISSUER", "SANDBOX_ISSUER_KEY", "SANDBOX_COOKIE_SECRET"):
        assert name in problems
    assert (
        shared_auth_problems(load_settings(issuer_key=new_key_pem(), cookie_secret="s" * 40)) == []
    )
    assert (
        shared_auth_problems(
            load_settings(oidc_issuer="https://id.example.com", cookie_secret="s" * 40)
        )
        == []
    )


def test_what_the_operator_lacks_is_named() -> None:
    problems = " ".join(startup_problems(load_settings(git_base_url="gitea.local")))
    assert "SANDBOX_DATABASE_URL" in problems
    assert "SANDBOX_GIT_BASE_URL" in problems
    assert (
        startup_problems(
            load_settings(
                database_url="postgresql+asyncpg://u@h/db", git_base_url="https://g.example"
            )
        )
        == []
    )


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    return subprocess.run(
        [SANDBOX, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sandbox_api_in_kube_mode_refuses_to_start_without_shared_auth(
    kube: FakeKube, tmp_path: Path
) -> None:
    done = run_cli(
        "api",
        "--port",
        "1",
        env={
            "SANDBOX_STORE": "kube",
            "KUBECONFIG": str(kube.kubeconfig_path),
            "SANDBOX_DATA_DIR": str(tmp_path / "d"),
        },
    )
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "SANDBOX_ISSUER_KEY" in said and "SANDBOX_COOKIE_SECRET" in said, said


def test_sandbox_operator_refuses_to_start_without_the_gateway_database(tmp_path: Path) -> None:
    done = run_cli("operator", env={"SANDBOX_DATA_DIR": str(tmp_path / "d")})
    assert done.returncode == 1
    assert "SANDBOX_DATABASE_URL" in " ".join(done.stderr.split())
