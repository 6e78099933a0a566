"""With an external issuer there are no login links: a link minted here would not
validate, so making one is 409 ``login-links-unavailable`` (a real server, a live
issuer double)."""

from __future__ import annotations

import httpx
from auth_idp import IssuerServer, jwks_of, token
from cryptography.hazmat.primitives.asymmetric import ec

from openova_sandbox.api.app import create_app
from openova_sandbox.api.composition import build_embedded
from openova_sandbox.config import load_settings
from openova_sandbox.testing.server import serve_in_thread


def test_login_links_need_the_embedded_issuer(
    idp: IssuerServer, ec_keys: list[ec.EllipticCurvePrivateKey], tmp_path
) -> None:
    idp.jwks = jwks_of((ec_keys[0], "k1"))
    settings = load_settings(data_dir=tmp_path / "data", store="memory", jwks_url=idp.jwks_url)
    with serve_in_thread(create_app(build_embedded(settings))) as server:
        jwt = token(ec_keys[0], kid="k1", email="dev@acme.com", org_id="acme")
        headers = {"Authorization": f"Bearer {jwt}"}
        assert httpx.get(f"{server.url}/api/v1/sandbox/whoami", headers=headers).is_success
        answer = httpx.post(f"{server.url}/api/v1/sandbox/login-links", headers=headers)
        assert answer.status_code == 409
        assert answer.json()["error"] == "login-links-unavailable"
        assert "external issuer" in answer.json()["detail"]
