"""The pure parts of login links: which `next` paths are accepted, and the used-link file
(appended, reloaded, pruned, compacted) under an injected clock."""

from __future__ import annotations

import stat

import pytest

from openova_sandbox.domain.errors import Invalid
from openova_sandbox.services.logins import UsedLinks, check_next, session_page


@pytest.mark.parametrize("path", ["/sandbox", "/sandbox/", "/sandbox/box", "/sandbox/a%2Fb?x=1"])
def test_console_paths_are_accepted(path: str) -> None:
    assert check_next(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "sandbox",
        "//evil.example/sandbox",
        "https://evil.example/sandbox",
        "/\\evil",
        "/sandboxes",
        "/sandbox/../api",
        "/sandbox/x y",
        "/sandbox/\x00",
        "/" + "a" * 2000,
        None,
    ],
)
def test_anything_else_is_invalid_next(path: object) -> None:
    with pytest.raises(Invalid) as info:
        check_next(path)
    assert info.value.code == "invalid-next"


def test_a_session_page_is_one_path_segment() -> None:
    assert session_page("my box/..") == "/sandbox/my%20box%2F.."
    assert check_next(session_page("box")) == "/sandbox/box"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_claims_are_written_and_survive_a_reload(tmp_path) -> None:
    clock, path = Clock(), tmp_path / "used"
    used = UsedLinks(path, clock=clock)
    assert used.claim("a1", 2000) is True
    assert used.claim("a1", 2000) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = UsedLinks(path, clock=clock)
    assert "a1" in again and again.claim("a1", 2000) is False
    # past its expiry the entry is forgotten (the link itself no longer validates)
    clock.now = 2001
    later = UsedLinks(path, clock=clock)
    assert "a1" not in later
    assert path.read_text() == ""


def test_the_file_is_compacted_as_entries_expire(tmp_path) -> None:
    clock, path = Clock(), tmp_path / "used"
    used = UsedLinks(path, clock=clock)
    for i in range(300):
        clock.now += 10
        assert used.claim(f"j{i}", clock.now + 50)  # each lives 50 s: about five at once
    lines = path.read_text().splitlines()
    assert len(lines) < 100, len(lines)
    assert f"j299 {clock.now + 50:.0f}" in lines


def test_odd_jtis_are_refused(tmp_path) -> None:
    used = UsedLinks(tmp_path / "used", clock=Clock())
    assert used.claim("has space", 2000) is False
    assert used.claim("line\nbreak", 2000) is False
    assert (tmp_path / "used").exists() is False
