"""Fuzz every HTTP operation of the running app from its own OpenAPI document.

Bounded (a few dozen examples per operation). Each generated request is sent with a
valid token or without one; every response must be documented, match its schema,
and never be a 5xx other than the documented 503.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    use_after_free,
)

SKIP_PATHS = {"/login", "/api/v1/sovereigns/{id}/k8s/stream"}  # an HTML page; endless SSE


@pytest.fixture
def fuzz_target(make_api, tmp_path):
    (tmp_path / "agents.json").write_text(
        json.dumps([{"slug": "aider", "binary": "/bin/cat", "defaultArgs": [], "requiredEnv": []}])
    )
    api = make_api(store="memory")
    document = api.http.get("/api/openapi.json").json()
    return api, schemathesis.openapi.from_dict(document)


def test_no_operation_answers_5xx_or_off_schema(fuzz_target):
    api, schema = fuzz_target
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 10
    token = api.token()
    # 5xx is asserted above (the documented 503 is allowed); data-acceptance heuristics
    # do not apply to bodies this API parses by hand with its own error codes
    excluded = [
        not_a_server_error,
        positive_data_acceptance,
        negative_data_rejection,
        use_after_free,
    ]
    checked = 0
    for operation in operations:
        if operation.path in SKIP_PATHS:
            continue

        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), authed=st.booleans())
        def run(case, authed):
            headers = {"Authorization": f"Bearer {token}"} if authed else {}
            response = case.call(base_url=api.url, headers=headers, timeout=10)
            # 503 is a documented answer (store unavailable, BYOS awaiting operator setup)
            assert response.status_code < 500 or response.status_code == 503, (
                case.method,
                case.formatted_path,
                response.text,
            )
            case.validate_response(response, excluded_checks=excluded)

        run()
        checked += 1
    assert checked == len(operations) - len(SKIP_PATHS & {o.path for o in operations})
