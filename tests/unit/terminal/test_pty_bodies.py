"""The terminal server's request bodies, checked by hand (the pod imports no pydantic):
the same values accepted and the same 400 details as the pydantic models they replaced
(each expected detail below is what those models said for that body)."""

from __future__ import annotations

import pytest

from openova_sandbox.api.terminal_edge.pty_app import (
    CreateBody,
    parse_create,
    parse_resize,
    parse_signal,
)
from openova_sandbox.domain.errors import Invalid


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"extra_args": 5}, "extra_args: Input should be a valid list"),
        ({"extraArgs": 5, "extra_args": [1]}, "extraArgs: Input should be a valid list"),
        (
            {"extraArgs": [1, "a", None]},
            "extraArgs.0: Input should be a valid string; extraArgs.2: Input should be a "
            "valid string",
        ),
        ({"envMap": {"a": 1}}, "envMap.a: Input should be a valid string"),
        ({"env_map": 3}, "env_map: Input should be a valid dictionary"),
        ({"envMap": []}, "envMap: Input should be a valid dictionary"),
        (
            {"rows": 5.5},
            "rows: Input should be a valid integer, got a number with a fractional part",
        ),
        ({"rows": None}, "rows: Input should be a valid integer"),
        ({"rows": []}, "rows: Input should be a valid integer"),
        (
            {"rows": "1e3"},
            "rows: Input should be a valid integer, unable to parse string as an integer",
        ),
        ({"rows": 2**70}, "rows: Input should be less than or equal to 1000"),
        (
            {"ring_bytes": "x"},
            "ring_bytes: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {"agent": 5, "cwd": 3, "command": "ls"},
            "agent: Input should be a valid string; command: Input should be a valid list; "
            "cwd: Input should be a valid string",
        ),
        (
            {"rows": 0, "cols": 1001},
            "rows: Input should be greater than or equal to 1; cols: Input should be less "
            "than or equal to 1000",
        ),
        ({"command": [1]}, "command.0: Input should be a valid string"),
    ],
)
def test_create_refuses_as_pydantic_did(body, detail) -> None:
    with pytest.raises(Invalid) as caught:
        parse_create(body)
    assert (caught.value.code, caught.value.detail) == ("invalid-request", detail)


def test_create_accepts_as_pydantic_did() -> None:
    assert parse_create({}) == CreateBody()
    assert parse_create({"rows": True, "cols": "5", "ringBytes": None, "other": 1}) == CreateBody(
        rows=1, cols=5
    )
    parsed = parse_create(
        {"agent": "aider", "extraArgs": ["-v"], "envMap": {"A": "1"}, "command": ("a",)}
    )
    assert (parsed.agent, parsed.extra_args, parsed.env_map, parsed.command) == (
        "aider",
        ("-v",),
        {"A": "1"},
        ("a",),
    )
    assert parse_create({"extra_args": ["x"], "ring_bytes": "4096"}).ring_bytes == 4096


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "rows: Field required; cols: Field required"),
        ({"rows": 1}, "cols: Field required"),
        (
            {"rows": "x", "cols": 2},
            "rows: Input should be a valid integer, unable to parse string as an integer",
        ),
        ([1, 2], "body must be a JSON object"),
    ],
)
def test_resize_refuses_as_pydantic_did(body, detail) -> None:
    with pytest.raises(Invalid) as caught:
        parse_resize(body)
    assert caught.value.detail == detail


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "signal: Field required"),
        ({"signal": 1}, "signal: Input should be a valid string"),
        ({"signal": None}, "signal: Input should be a valid string"),
        ("INT", "body must be a JSON object"),
    ],
)
def test_signal_refuses_as_pydantic_did(body, detail) -> None:
    with pytest.raises(Invalid) as caught:
        parse_signal(body)
    assert caught.value.detail == detail


def test_resize_and_signal_accept() -> None:
    assert parse_resize({"rows": "40", "cols": 120.0}) == (40, 120)
    assert parse_signal({"signal": "int", "extra": 1}) == "int"
