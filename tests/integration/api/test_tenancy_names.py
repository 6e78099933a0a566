"""Issue 11: repo access keyed on the org itself, default ids nobody else can hold.

A real server (uvicorn, SQLite) and real signed tokens; every refusal is a named 400 and
stores nothing.
"""

from __future__ import annotations

import pytest

from openova_sandbox.domain import naming

SESSIONS = "/api/v1/sandbox/sessions"


@pytest.fixture
def api(make_api):
    return make_api(store="sql", git_base_url="http://127.0.0.1:9")


def _create(api, body, **who):
    return api.http.post(SESSIONS, headers=api.auth(**who), json=body)


@pytest.mark.parametrize(
    ("org", "repo"),
    [
        ("Acme Inc", "default/site"),  # "Acme Inc" and "Default Corp" both slug to default
        ("Default Corp", "default/site"),
        ("ACME", "acme/site"),  # slugs to acme: another org's repos
    ],
)
def test_an_org_that_only_slugs_to_the_repo_org_may_not_clone_it(api, org, repo):
    answer = _create(api, {"agent": "aider", "repo": repo}, org=org, sub="s-" + org)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "cross-org-repo"
    assert f'your org "{org}"' in answer.json()["detail"]
    listed = api.http.get(SESSIONS, headers=api.auth(org=org, sub="s-" + org)).json()
    assert listed == {"sandboxes": []}


def test_the_org_whose_id_is_the_repo_org_clones_it(api):
    answer = _create(api, {"agent": "aider", "repo": "acme/site"}, org="acme")
    assert answer.status_code == 201, answer.text
    assert answer.json()["repo"] == "acme/site"


def test_a_caller_without_an_org_clones_no_repos(api):
    answer = _create(api, {"agent": "aider", "repo": "default/site"}, org="")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "cross-org-repo"
    assert "without an org" in answer.json()["detail"]


def test_default_ids_of_subjects_sharing_a_prefix_differ(api):
    """Before: ``aider-<sub[:8]>`` gave both members ``aider-alice-ac``; the second
    create answered 409, and would forever."""
    one = _create(api, {"agent": "aider"}, sub="alice-acme", email="alice@acme.com")
    two = _create(api, {"agent": "aider"}, sub="alice-acme-2", email="alice2@acme.com")
    assert one.status_code == 201 and two.status_code == 201, (one.text, two.text)
    assert one.json()["id"] == naming.default_id("aider", "alice-acme")
    assert two.json()["id"] == naming.default_id("aider", "alice-acme-2")
    assert one.json()["id"] != two.json()["id"]


def test_nobody_can_name_a_sandbox_after_someone_elses_default_id(api):
    victim = naming.default_id("aider", "alice-acme")
    squat = _create(api, {"agent": "aider", "name": victim}, sub="mallory", email="m@acme.com")
    assert squat.status_code == 400, squat.text
    assert squat.json()["error"] == "reserved-name"
    assert "default id" in squat.json()["detail"]
    # so the owner's unnamed create still gets it
    mine = _create(api, {"agent": "aider"}, sub="alice-acme", email="alice@acme.com")
    assert mine.status_code == 201 and mine.json()["id"] == victim
    # and naming a sandbox after one's own default id is no squat
    own = naming.default_id("shell", "mallory")
    named = _create(api, {"agent": "shell", "name": own}, sub="mallory", email="m@acme.com")
    assert named.status_code == 201 and named.json()["id"] == own
