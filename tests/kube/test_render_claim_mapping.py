"""The claim mapping reaches every sandbox pod (docs/auth.md, "Kubernetes mode's sandbox
pods"): the terminal server validates the token the control plane relays and must read
it as the control plane does. Which settings those are is not listed here: it is read
off ``ClaimMapping.from_settings`` itself (every Settings field it touches), so a
mapping setting added to Settings and not passed on fails this test."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from openova_sandbox.auth.claims import ClaimMapping
from openova_sandbox.config import Settings, claim_mapping_env, env_name, load_settings
from openova_sandbox.controller.kube.operator import render_config
from openova_sandbox.controller.kube.render import render_children

from .samples import sandbox

# values unlike the defaults (a mapping field not named here gets a made-up string)
UNUSUAL = {
    "oidc_org_claim": "tenant.name",
    "oidc_org_group_prefix": "/orgs/",
    "oidc_admin_roles": "",  # no role makes an admin (the default: org-admin)
    "oidc_admin_groups": "/orgs/{org}/admins",
    "oidc_admin_tier": "",  # tiers grant nothing (the default: admin)
}


class Reading:
    """Settings that note which fields are read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self.settings, name)


def mapping_fields() -> set[str]:
    reading = Reading(Settings())
    ClaimMapping.from_settings(reading)  # type: ignore[arg-type]
    return reading.read


def unusual_settings() -> Settings:
    names = mapping_fields()
    values = {name: UNUSUAL.get(name, f"made-up-{name}") for name in names}
    return load_settings(oidc_issuer="https://id.example.com/realms/openova", **values)


def pod_env(settings: Settings) -> dict[str, dict[str, Any]]:
    children = render_children(
        sandbox(repos=()), "sandbox-dev-at-acme-com", render_config(settings)
    )
    (workload,) = [c for c in children if c["kind"] == "StatefulSet"]
    (container,) = [
        c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "pty-server"
    ]
    return {e["name"]: e for e in container["env"]}


def test_the_mapping_is_read_from_settings_at_all() -> None:
    # the derivation below means something only if it finds the settings
    assert {"oidc_org_claim", "oidc_admin_groups"} <= mapping_fields()


def test_every_mapping_setting_reaches_the_pod_with_its_value() -> None:
    settings = unusual_settings()
    env = pod_env(settings)
    for name in sorted(mapping_fields()):
        variable = env_name(name)
        assert variable in env, f"{name} ({variable}) is not passed to the sandbox pod"
        assert env[variable] == {"name": variable, "value": str(getattr(settings, name))}


def test_defaults_are_passed_too() -> None:
    # an empty value means something (no admin tier); a missing one is the default
    env = pod_env(load_settings(oidc_issuer="https://id.example.com", oidc_admin_tier=""))
    assert env[env_name("oidc_admin_tier")]["value"] == ""
    assert env[env_name("oidc_org_claim")]["value"] == "org_id"


def test_the_pod_reads_the_same_mapping_back(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = unusual_settings()
    env = pod_env(settings)
    for f in fields(Settings):  # nothing of this process's environment
        monkeypatch.delenv(env_name(f.name), raising=False)
        monkeypatch.delenv(f"SANDBOX_{f.name.upper()}", raising=False)
    for entry in env.values():
        if "value" in entry:
            monkeypatch.setenv(entry["name"], entry["value"])
    in_pod = load_settings()
    assert ClaimMapping.from_settings(in_pod) == ClaimMapping.from_settings(settings)
    assert ClaimMapping.from_settings(in_pod) != ClaimMapping()


def test_only_the_marked_settings_are_passed() -> None:
    # the derivation is by the Settings fields' own mark: what the mapping reads and
    # nothing else (no secret rides along)
    passed = {variable for variable, _ in claim_mapping_env(Settings())}
    assert passed == {env_name(name) for name in mapping_fields()}
