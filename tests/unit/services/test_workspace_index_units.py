"""The pure parts of the workspace index and the secrets' rules: which paths are paths
inside a workspace, how a file is cut into blocks, which words of a query find lines,
which secret names and values are accepted."""

from __future__ import annotations

import pytest

from openova_sandbox.domain.errors import Forbidden, Invalid
from openova_sandbox.services.sandbox_secrets import MAX_VALUE_BYTES, validate_name, validate_value
from openova_sandbox.services.workspace_index import CHUNK_LINES, _chunks, _terms, relative_parts


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("", []),
        (".", []),
        ("a/b.txt", ["a", "b.txt"]),
        ("./a//b/./c", ["a", "b", "c"]),
        ("a/", ["a"]),
        ("..a/b..", ["..a", "b.."]),  # dots inside a name are a name
    ],
)
def test_relative_parts(path: str, parts: list[str]) -> None:
    assert relative_parts(path) == parts


@pytest.mark.parametrize("path", ["..", "a/../b", "a/..", "../../etc/passwd"])
def test_dot_dot_is_refused(path: str) -> None:
    with pytest.raises(Forbidden):
        relative_parts(path)


@pytest.mark.parametrize("path", ["/etc/passwd", "a\0b", "x" * 5000, 3, None])
def test_not_a_workspace_path(path: object) -> None:
    with pytest.raises(Invalid):
        relative_parts(path)


def test_chunks_number_lines_from_one() -> None:
    text = "".join(f"l{i}\n" for i in range(1, CHUNK_LINES + 3))
    chunks = _chunks(text)
    assert [start for start, _ in chunks] == [1, CHUNK_LINES + 1]
    assert chunks[1][1] == f"l{CHUNK_LINES + 1}\nl{CHUNK_LINES + 2}"  # no empty last line
    assert _chunks("") == [(1, "")]
    assert _chunks("no newline") == [(1, "no newline")]


def test_query_terms_as_the_index_tokenizes() -> None:
    assert _terms("Hello_World AND fooBar") == {"hello", "world", "foobar"}
    assert _terms('"exact phrase" -skip +must') == {"exact", "phrase", "skip", "must"}
    assert _terms("text:needle") == {"needle"}
    assert _terms("AND OR NOT") == set()


@pytest.mark.parametrize("name", ["A", "_x", "GITHUB_TOKEN", "db.password", "a-b", "x" * 128])
def test_secret_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "1A", "-a", ".a", "a b", "a/b", "x" * 129, "é", None, 1])
def test_bad_secret_names(name: object) -> None:
    with pytest.raises(Invalid):
        validate_name(name)


def test_secret_values() -> None:
    assert validate_value("") == b""
    assert len(validate_value("x" * MAX_VALUE_BYTES)) == MAX_VALUE_BYTES
    for bad in ("x" * (MAX_VALUE_BYTES + 1), "\ud800", b"bytes", None):
        with pytest.raises(Invalid):
            validate_value(bad)
