"""Token sources: precedence, header parsing and the signed session cookie."""

from __future__ import annotations

import pytest

from openova_sandbox.auth.cookie import cookie_signature, sign_cookie, verify_cookie
from openova_sandbox.auth.sources import CookieRejected, TokenFound, extract_token
from openova_sandbox.domain.errors import Invalid, Unauthenticated

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
OTHER = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ2In0.b3RoZXI"
SECRET = "cookie-secret-for-tests"


def found(**kwargs: str | None) -> TokenFound | None:
    args: dict[str, str | None] = {"authorization": None, "query_token": None, "cookie": None}
    args.update(kwargs)
    return extract_token(
        authorization=args["authorization"],
        query_token=args["query_token"],
        cookie=args["cookie"],
        cookie_secret=SECRET,
    )


def test_bearer_beats_query_beats_cookie() -> None:
    assert found(authorization=f"Bearer {JWT}", query_token=OTHER, cookie=OTHER) == TokenFound(
        JWT, "bearer"
    )
    assert found(query_token=JWT, cookie=OTHER) == TokenFound(JWT, "query")
    assert found(cookie=JWT) == TokenFound(JWT, "cookie")
    assert found() is None


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert found(authorization=f"{scheme} {JWT}") == TokenFound(JWT, "bearer")


def test_bearer_tolerates_surrounding_whitespace() -> None:
    assert found(authorization=f"  Bearer   {JWT}  ") == TokenFound(JWT, "bearer")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "", JWT])
def test_non_bearer_or_empty_authorization_falls_through(header: str) -> None:
    assert found(authorization=header, query_token=OTHER) == TokenFound(OTHER, "query")


def test_empty_query_token_falls_through_to_cookie() -> None:
    assert found(query_token="", cookie=JWT) == TokenFound(JWT, "cookie")
    assert found(query_token="   ", cookie=JWT) == TokenFound(JWT, "cookie")


def test_empty_or_cleared_cookie_is_absent() -> None:
    assert found(cookie="") is None
    assert found(cookie='""') is None


def test_signed_cookie_is_verified_and_stripped() -> None:
    signed = sign_cookie(JWT, SECRET)
    assert signed.count(".") == 3
    assert signed.startswith(JWT + ".")
    assert found(cookie=signed) == TokenFound(JWT, "cookie")
    assert found(cookie=f'"{signed}"') == TokenFound(JWT, "cookie")


def test_signature_is_hmac_sha256_base64url_without_padding() -> None:
    # Independent computation of the documented format.
    import base64
    import hashlib
    import hmac

    digest = hmac.new(SECRET.encode(), JWT.encode(), hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert cookie_signature(JWT, SECRET) == expected
    assert sign_cookie(JWT, SECRET) == f"{JWT}.{expected}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # signature changed
        lambda s: OTHER + "." + s.rsplit(".", 1)[1],  # jwt swapped under the same sig
        lambda s: s.rsplit(".", 1)[0] + ".",  # empty signature
    ],
)
def test_tampered_signed_cookie_is_rejected(tamper) -> None:  # type: ignore[no-untyped-def]
    value = tamper(sign_cookie(JWT, SECRET))
    with pytest.raises(CookieRejected) as info:
        found(cookie=value)
    assert isinstance(info.value, Unauthenticated)
    assert JWT not in str(info.value)


def test_cookie_signed_with_another_secret_is_rejected() -> None:
    with pytest.raises(CookieRejected):
        found(cookie=sign_cookie(JWT, "another-secret"))


def test_signed_cookie_without_a_configured_secret_is_rejected() -> None:
    with pytest.raises(CookieRejected, match="no cookie secret"):
        extract_token(
            authorization=None,
            query_token=None,
            cookie=sign_cookie(JWT, SECRET),
            cookie_secret="",
        )


def test_bad_cookie_does_not_matter_when_a_bearer_token_is_present() -> None:
    assert found(authorization=f"Bearer {JWT}", cookie="a.b.c.bad") == TokenFound(JWT, "bearer")


def test_verify_cookie_answers_none_for_unsigned_or_unverifiable() -> None:
    assert verify_cookie(JWT, SECRET) is None
    assert verify_cookie(sign_cookie(JWT, SECRET), "") is None
    assert verify_cookie(sign_cookie(JWT, SECRET), SECRET) == JWT


def test_sign_cookie_needs_a_secret_and_a_jwt() -> None:
    with pytest.raises(Invalid):
        sign_cookie(JWT, "")
    with pytest.raises(Invalid):
        sign_cookie("not-a-jwt", SECRET)


def test_repr_never_shows_the_token() -> None:
    text = repr(TokenFound(JWT, "bearer"))
    assert JWT not in text
    assert "bearer" in text
