"""The encrypted token vault on a real filesystem."""

from __future__ import annotations

import os
import stat
import threading

from cryptography.fernet import Fernet

from openova_sandbox.services.byos_vault import StoredTokens, TokenVault

TOKENS = StoredTokens(
    access_token="sk-ant-oat01-secret-access",
    refresh_token="sk-ant-ort01-secret-refresh",
    scope="read:user write:claude-code",
    expires_at=1_900_000_000.0,
    account_email="max@claude.example",
    connected_at=1_800_000_000.0,
)


def test_round_trip_across_instances(tmp_path):
    TokenVault(tmp_path).put("user-1", TOKENS)
    assert TokenVault(tmp_path).get("user-1") == TOKENS
    assert TokenVault(tmp_path).get("user-2") is None


def test_files_are_encrypted_private_and_named_by_hash(tmp_path):
    vault = TokenVault(tmp_path)
    vault.put("user-1", TOKENS)
    path = vault.path_for("user-1")
    sealed = path.read_bytes()
    for secret in (b"sk-ant-oat01", b"sk-ant-ort01", b"max@claude.example", b"user-1"):
        assert secret not in sealed
    assert "user-1" not in path.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = tmp_path / "key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # it really is Fernet under that key
    assert StoredTokens.from_json(Fernet(key.read_bytes()).decrypt(sealed)) == TOKENS


def test_overwrite_leaves_no_temp_files(tmp_path):
    vault = TokenVault(tmp_path)
    vault.put("user-1", TOKENS)
    newer = StoredTokens(access_token="sk-ant-oat01-newer", connected_at=2.0)
    vault.put("user-1", newer)
    assert vault.get("user-1") == newer
    names = sorted(p.name for p in (tmp_path / "tokens").iterdir())
    assert names == [vault.path_for("user-1").name]


def test_delete_is_idempotent(tmp_path):
    vault = TokenVault(tmp_path)
    vault.put("user-1", TOKENS)
    assert vault.delete("user-1") is True
    assert vault.delete("user-1") is False
    assert vault.get("user-1") is None


def test_a_replaced_key_reads_as_not_connected(tmp_path):
    TokenVault(tmp_path).put("user-1", TOKENS)
    os.replace(tmp_path / "key", tmp_path / "old-key")
    (tmp_path / "key").write_bytes(Fernet.generate_key())
    assert TokenVault(tmp_path).get("user-1") is None


def test_a_corrupt_file_reads_as_not_connected(tmp_path):
    vault = TokenVault(tmp_path)
    vault.put("user-1", TOKENS)
    vault.path_for("user-1").write_bytes(b"garbage")
    assert TokenVault(tmp_path).get("user-1") is None


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    vaults = [TokenVault(tmp_path) for _ in range(8)]
    barrier = threading.Barrier(len(vaults))

    def write(i: int) -> None:
        barrier.wait()
        vaults[i].put(f"user-{i}", TOKENS)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(vaults))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    fresh = TokenVault(tmp_path)
    assert all(fresh.get(f"user-{i}") == TOKENS for i in range(len(vaults)))
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["key"]


def test_secrets_are_not_in_repr():
    text = repr(TOKENS)
    assert "secret" not in text
    assert "max@claude.example" in text
