"""OPTIONS always passes: no token, 204 with the path's methods, no CORS grant."""

from __future__ import annotations

import pytest

SESSIONS = "/api/v1/sandbox/sessions"


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        (SESSIONS, {"GET", "POST", "OPTIONS"}),
        (f"{SESSIONS}/some-id", {"GET", "DELETE", "OPTIONS"}),
        ("/api/v1/sandbox/byos/claude-code", {"DELETE", "OPTIONS"}),
        ("/healthz", {"GET", "OPTIONS"}),
    ],
)
def test_options_needs_no_token_and_lists_the_methods(api, path, methods):
    answer = api.http.options(path, headers={"Origin": "https://elsewhere.example"})
    assert answer.status_code == 204, answer.text
    assert set(answer.headers["allow"].split(", ")) >= methods
    assert answer.content == b""
    # passing authentication is not a cross-origin grant
    assert "access-control-allow-origin" not in answer.headers


def test_options_on_an_unknown_path_is_404(api):
    assert api.http.options("/api/v1/nothing-here").status_code == 404


def test_other_methods_still_need_a_token(api):
    assert api.http.get(SESSIONS).status_code == 401
