"""The OpenAPI document: complete, and the console's copy of it is current."""

from __future__ import annotations

import json
from pathlib import Path

from openova_sandbox.cli.main import openapi_document

ROOT = Path(__file__).resolve().parents[3]


def test_every_sessions_route_lists_its_status_codes():
    doc = openapi_document()
    paths = doc["paths"]
    expected = {
        ("/api/v1/sandbox/sessions", "get"): {"200", "401", "500", "503"},
        ("/api/v1/sandbox/sessions", "post"): {"201", "400", "401", "409", "429", "500", "503"},
        ("/api/v1/sandbox/sessions/{id}", "get"): {"200", "401", "404", "500", "503"},
        ("/api/v1/sandbox/sessions/{id}", "delete"): {"204", "401", "404", "500", "503"},
    }
    for (path, method), codes in expected.items():
        listed = set(paths[path][method]["responses"])
        assert codes <= listed, (path, method, codes - listed)
    create = paths["/api/v1/sandbox/sessions"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["agent"]


def test_console_copy_matches_the_app():
    """web/openapi.json feeds the console's generated client types; regenerate it with
    `sandbox openapi > web/openapi.json` (then `npm run gen:api` in web/)."""
    committed = json.loads((ROOT / "web" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_document())), (
        "web/openapi.json is stale: run `.venv/bin/sandbox openapi > web/openapi.json`"
    )
