"""Claim mapping (auth/claims.py): where the org comes from and who is an org admin, and
the session cookie of server-side console sessions (auth/cookie.py, auth/sources.py)."""

from __future__ import annotations

import pytest

from openova_sandbox.auth.claims import ClaimMapping
from openova_sandbox.auth.cookie import session_cookie, session_id_of, sign_cookie
from openova_sandbox.auth.sources import CookieRejected, extract_token
from openova_sandbox.config import load_settings
from openova_sandbox.domain.errors import UnusableClaim
from openova_sandbox.domain.principal import principal_from_claims

KEYCLOAK = ClaimMapping(org_claim="organization")


def test_the_default_mapping_reads_as_the_domain_does():
    claims = {"sub": "s", "org_id": "acme", "realm_access": {"roles": ["org-admin"]}}
    assert ClaimMapping().principal(claims) == principal_from_claims(claims)
    legacy = {"sub": "s", "org": "old", "tier": "Admin"}
    mapped = ClaimMapping().principal(legacy)
    assert mapped is not None and (mapped.org, mapped.is_org_admin) == ("old", True)
    assert ClaimMapping().principal({"email": "no-sub@x"}) is None


@pytest.mark.parametrize(
    ("value", "requested", "org"),
    [
        ("acme", None, "acme"),
        ("acme", "acme", "acme"),
        (["acme", "globex"], "globex", "globex"),
        (["acme"], "acme", "acme"),
        ({"acme": {"id": "1"}, "globex": {}}, "acme", "acme"),  # with attributes
    ],
)
def test_keycloak_organization_claim(value, requested, org):
    principal = KEYCLOAK.principal({"sub": "s", "organization": value}, requested_org=requested)
    assert principal is not None and principal.org == org


@pytest.mark.parametrize(
    ("value", "requested", "says"),
    [
        (["acme", "globex"], None, "names 2 organization(s), not a string (acme, globex)"),
        (["acme"], None, "names 1 organization(s), not a string (acme)"),
        (["acme", "globex"], "initech", "'initech' is not among"),
        ("acme", "globex", "'globex' was asked for, but the token's organization claim says"),
        ([], "acme", "'acme' was asked for"),
        (["acme", 3], "acme", "a list holding something other than strings"),
        (7, None, "is a number, not a string"),
        (True, None, "is a boolean, not a string"),
    ],
)
def test_unusable_org_claims_are_refused_saying_what(value, requested, says):
    with pytest.raises(UnusableClaim) as refused:
        KEYCLOAK.principal({"sub": "s", "organization": value}, requested_org=requested)
    assert says in refused.value.detail


def test_an_object_under_the_default_org_id_is_refused():
    with pytest.raises(UnusableClaim, match="org_id claim is a dict, not a string"):
        ClaimMapping().principal({"sub": "s", "org_id": {"acme": {}}}, requested_org="acme")


def test_a_dotted_path_reaches_into_an_object():
    mapping = ClaimMapping(org_claim="tenant.name")
    principal = mapping.principal({"sub": "s", "tenant": {"name": "acme"}})
    assert principal is not None and principal.org == "acme"


def test_org_from_a_group_prefix():
    mapping = ClaimMapping(org_group_prefix="/orgs/")
    one = mapping.principal({"sub": "s", "groups": ["/orgs/acme/devs", "/staff"]})
    assert one is not None and one.org == "acme"  # one org group is the caller's org
    two = {"sub": "s", "groups": ["/orgs/acme", "/orgs/globex/admins"]}
    with pytest.raises(UnusableClaim, match="groups under '/orgs/' names 2"):
        mapping.principal(two)
    chosen = mapping.principal(two, requested_org="globex")
    assert chosen is not None and chosen.org == "globex"
    none = mapping.principal({"sub": "s", "groups": ["/staff"]})
    assert none is not None and none.org == ""
    with pytest.raises(UnusableClaim, match="not a list of strings"):
        mapping.principal({"sub": "s", "groups": "/orgs/acme"})


def test_org_admin_by_role_group_or_tier_as_configured():
    base = {"sub": "s", "org_id": "acme"}
    by_role = ClaimMapping(admin_roles=("sandbox-admin",))
    assert by_role.principal({**base, "realm_access": {"roles": ["sandbox-admin"]}}).is_org_admin
    # the default role no longer counts when the operator named another
    assert not by_role.principal({**base, "realm_access": {"roles": ["org-admin"]}}).is_org_admin
    by_group = ClaimMapping(admin_groups=("/orgs/{org}/admins",))
    assert by_group.principal({**base, "groups": ["/orgs/acme/admins"]}).is_org_admin
    assert not by_group.principal({**base, "groups": ["/orgs/globex/admins"]}).is_org_admin
    by_tier = ClaimMapping(admin_tier="owner")
    assert by_tier.principal({**base, "tier": "owner"}).is_org_admin
    assert not by_tier.principal({**base, "tier": "admin"}).is_org_admin
    no_tier = ClaimMapping(admin_tier="")
    assert not no_tier.principal({**base, "tier": "superadmin"}).is_org_admin
    # never without an org, whatever grants it
    assert not by_group.principal({"sub": "s", "groups": ["/orgs//admins"]}).is_org_admin
    with pytest.raises(ValueError, match="admin tier 'boss'"):
        ClaimMapping(admin_tier="boss")


def test_mapping_from_settings():
    settings = load_settings(
        oidc_org_claim="organization",
        oidc_admin_roles="a, b",
        oidc_admin_groups="/x/{org} /y",
        oidc_admin_tier="owner",
    )
    mapping = ClaimMapping.from_settings(settings)
    assert mapping.org_claim == "organization"
    assert mapping.admin_roles == ("a", "b")
    assert mapping.admin_groups == ("/x/{org}", "/y")
    assert ClaimMapping.from_settings(load_settings()).is_default


def test_session_cookie_signature_and_sources():
    value = session_cookie("abc_DEF-123", "secret")
    assert value.startswith("oidc:abc_DEF-123:")
    assert session_id_of(value, "secret") == "abc_DEF-123"
    assert session_id_of(value, "other") is None
    assert session_id_of(value[:-1] + ("A" if value[-1] != "A" else "B"), "secret") is None
    assert session_id_of("oidc:x", "secret") is None
    found = extract_token(
        authorization=None, query_token=None, cookie=value, cookie_secret="secret"
    )
    assert found is not None and (found.source, found.token) == ("session", "abc_DEF-123")
    with pytest.raises(CookieRejected):
        extract_token(authorization=None, query_token=None, cookie=value, cookie_secret="x")
    # a bearer still wins, and a signed JWT cookie is still a token cookie
    bearer = extract_token(
        authorization="Bearer a.b.c", query_token=None, cookie=value, cookie_secret="x"
    )
    assert bearer is not None and bearer.source == "bearer"
    jwt_cookie = sign_cookie("a.b.c", "secret")
    token = extract_token(
        authorization=None, query_token=None, cookie=jwt_cookie, cookie_secret="secret"
    )
    assert token is not None and (token.source, token.token) == ("cookie", "a.b.c")
