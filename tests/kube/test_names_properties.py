"""Properties of the derived Kubernetes names: valid for any input, and distinct inputs
that are repaired never collapse into one name."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from openova_sandbox.controller.kube.names import (
    dns_label,
    hashed_namespace,
    owner_label,
    plain_namespace,
)

from .samples import sandbox

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
emails = st.emails() | st.text(min_size=1, max_size=300)


@given(st.text(max_size=400))
def test_dns_label_is_always_a_valid_label(text: str) -> None:
    label = dns_label(text)
    assert LABEL.match(label) and len(label) <= 63


@given(st.text(max_size=200), st.text(max_size=200))
def test_repaired_labels_do_not_collide(a: str, b: str) -> None:
    if a != b:
        assert dns_label(a) != dns_label(b) or dns_label(a) in (a, b)


@given(emails, st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
def test_workspace_names_are_valid_for_any_owner(email: str, name: str) -> None:
    sb = sandbox(name=name, email=email)
    for namespace in (plain_namespace(sb), hashed_namespace(sb)):
        assert LABEL.match(namespace) and len(namespace) <= 63
        assert namespace.startswith("sandbox-") or len(namespace) == 8
    assert plain_namespace(sb) != hashed_namespace(sb)
    owner = owner_label(sb)
    assert owner == "" or (LABEL.match(owner) and len(owner) <= 63)
