"""Naming rules of sessions-api.md / sandbox-resource.md, by example and by property."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openova_sandbox.domain import naming

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("agent", "sub", "name", "expected"),
    [
        ("claude-code", "user-sub-abcdef12", None, "claude-code-2c234e5a"),
        ("aider", "abc", None, "aider-ba7816bf"),
        ("aider", "x", "My Sandbox!", "my-sandbox"),
        ("aider", "x", "---", "sandbox-aider"),
        ("aider", "x", "  ", "aider-2d711642"),
        ("aider", "x", "Ünïcode__name", "n-code-name"),
        ("aider", "x", "a" * 62 + "-b", "a" * 62),
        ("aider", "x", "x" * 80, "x" * 63),
    ],
)
def test_object_name_examples(agent, sub, name, expected):
    assert naming.object_name(agent=agent, sub=sub, name=name) == expected


@given(
    agent=st.sampled_from(["aider", "claude-code", "qwen-code"]),
    sub=st.text(min_size=1, max_size=40),
    name=st.one_of(st.none(), st.text(max_size=120)),
)
def test_object_name_is_always_a_dns_label(agent, sub, name):
    result = naming.object_name(agent=agent, sub=sub, name=name)
    assert 1 <= len(result) <= 63
    assert DNS_LABEL.match(result), result
    # deterministic: the same request gives the same id (duplicates conflict)
    assert naming.object_name(agent=agent, sub=sub, name=name) == result


def test_default_ids_differ_for_subjects_sharing_a_prefix():
    """Issue 11: ``<agent>-<sub[:8]>`` gave alice-acme and alice-acme-2 (or any sub
    starting "alice-ac") one id, so one member's sandbox made the other's unnamed create
    answer 409 forever. The id now comes from a hash of the whole subject."""
    one = naming.object_name(agent="aider", sub="alice-acme", name=None)
    two = naming.object_name(agent="aider", sub="alice-acme-2", name=None)
    assert one != two
    assert one == naming.default_id("aider", "alice-acme") == "aider-dd724cc2"


@given(sub=st.text(min_size=1, max_size=60), other=st.text(min_size=1, max_size=60))
def test_default_id_is_reserved_for_its_subject(sub, other):
    agents = ("aider", "claude-code", "shell")
    mine = naming.default_id("aider", sub)
    # the subject itself may name a sandbox after its own default id
    assert naming.reserved_name_problem(mine, sub=sub, agents=agents) == ""
    if naming.default_id("aider", other) != mine:
        assert "default id" in naming.reserved_name_problem(mine, sub=other, agents=agents)


@pytest.mark.parametrize(
    "name", ["aider-deadbeef0", "aider-deadbeeg", "aider-dead", "bench-deadbeef", "my-aider"]
)
def test_names_not_shaped_like_a_default_id_are_free(name):
    assert naming.reserved_name_problem(name, sub="x", agents=("aider",)) == ""


@pytest.mark.parametrize(
    ("repo", "org", "allowed"),
    [
        ("acme/site", "acme", True),
        ("acme/site", " acme ", True),  # the claim is trimmed, as for the namespace
        ("acme/site", "ACME", False),  # slugs to acme, but is another org
        ("default/site", "Acme Inc", False),  # both of these slug to "default"
        ("default/site", "Default Corp", False),
        ("default/site", "", False),  # org-less callers own no repos
        ("default/site", "default", True),  # an org whose id is "default" does
        ("acme.io/site", "acme.io", True),  # the id need not be a slug, only a repo org
        ("other/site", "acme", False),
    ],
)
def test_repo_access_is_keyed_on_the_org_id(repo, org, allowed):
    problem = naming.repo_access_problem(repo, org)
    assert (problem == "") is allowed, problem
    if not allowed:
        assert repo in problem


@given(st.text(max_size=50))
def test_org_slug_is_valid_or_default(org):
    slug = naming.org_slug(org)
    assert slug == "default" or naming.is_valid_slug(slug)
    if naming.is_valid_slug(org.strip().lower()):
        assert slug == org.strip().lower()


def test_org_slug_examples():
    assert naming.org_slug(" Acme ") == "acme"
    assert naming.org_slug("ab") == "default"
    assert naming.org_slug("9lives") == "default"
    assert naming.org_slug("acme corp") == "default"


def test_namespace_rules():
    assert naming.namespace_for(" Acme Corp ", "tenants") == "Acme Corp"
    assert naming.namespace_for("", "tenants") == "tenants"
    assert naming.namespace_for("  ", None) == "catalyst-system"


@pytest.mark.parametrize(
    ("email", "uid"),
    [
        ("dev@acme.com", "dev-at-acme-com"),
        (" Dev.Ops+ci@Acme.io ", "dev-ops-plus-ci-at-acme-io"),
        ("first_last@x.org", "first-last-at-x-org"),
        ("-@-", "at"),
    ],
)
def test_owner_uid(email, uid):
    assert naming.owner_uid(email) == uid


@given(st.emails())
def test_owner_uid_property(email):
    uid = naming.owner_uid(email)
    assert len(uid) <= 200
    assert not uid.startswith("-")
    assert not uid.endswith("-")
    assert "@" not in uid
    assert "." not in uid


@pytest.mark.parametrize(
    ("repo", "ok"),
    [
        ("acme/site", True),
        ("acme/Site.v2_x-y", True),
        ("Acme/site", False),
        ("acme", False),
        ("acme/site/extra", False),
        ("/site", False),
        ("acme/", False),
        ("_acme/site", False),
        # issue 11: the whole string must match ($ alone matched before a final newline)
        ("acme/x\n", False),
        ("acme\n/x", False),
        ("acme/..", False),
        ("acme/.", False),
        # capped: org part 63 characters, repo part 100
        ("a" * 63 + "/x", True),
        ("a" * 64 + "/x", False),
        ("acme/" + "r" * 100, True),
        ("acme/" + "r" * 101, False),
        ("acme/" + "r" * 300, False),
    ],
)
def test_repo_pattern(repo, ok):
    assert naming.is_valid_repo(repo) is ok


LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@pytest.mark.parametrize(
    "value", ["dev-at-acme-com", "My_App.v2", "a", "", "x" * 63, "claude-code-1234abcd"]
)
def test_valid_label_values_are_kept(value):
    assert naming.label_value(value) == value


@pytest.mark.parametrize(
    "value", ["o'neil-at-acme-com", "jürgen-at-acme-de", "x" * 64, "-lead", "trail.", "a b"]
)
def test_invalid_label_values_are_repaired_with_a_hash(value):
    repaired = naming.label_value(value)
    assert LABEL_VALUE.match(repaired), repaired
    assert repaired.endswith(naming.short_hash(value))


@given(st.text(max_size=300))
def test_label_value_is_always_valid_and_keeps_texts_apart(text):
    value = naming.label_value(text)
    assert LABEL_VALUE.match(value), value
    assert len(value) <= 63
    # a repaired value carries the original's hash: it cannot equal another text's
    if value != text:
        assert value.endswith(naming.short_hash(text))
