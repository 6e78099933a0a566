"""Fixtures for the auth integration tests: a live issuer double and real keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from auth_idp import IssuerServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@pytest.fixture
def idp() -> Iterator[IssuerServer]:
    server = IssuerServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


@pytest.fixture(scope="session")
def ec_keys() -> list[ec.EllipticCurvePrivateKey]:
    return [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
