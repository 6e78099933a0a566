"""Kubernetes names and label values derived from a Sandbox.

Why a module of its own: the owner-uid of sandbox-resource.md may be 200 characters and
keeps characters an email allows but Kubernetes names do not (``'``, ``!``, non-ASCII),
while namespace names and label values stop at 63. Every derived name goes through
:func:`dns_label`, which keeps short valid names verbatim and otherwise cuts and adds a
hash of the original so two long names never collapse into one.
"""

from __future__ import annotations

import re

from ...domain.model import Sandbox
from ...domain.naming import label_value, owner_uid, repo_name, short_hash

MAX_LABEL = 63
NAMESPACE_PREFIX = "sandbox-"

_INVALID = re.compile(r"[^a-z0-9-]+")
_VALID_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_label(text: str, *, max_len: int = MAX_LABEL, hash_repairs: bool = True) -> str:
    """``text`` as an RFC 1123 label: verbatim when already valid and short enough,
    otherwise cleaned, cut and suffixed with a hash of the original text (a repaired name
    gets the hash too unless ``hash_repairs`` is off, for names whose uniqueness the
    caller checks itself)."""
    if len(text) <= max_len and _VALID_LABEL.match(text):
        return text
    cleaned = _INVALID.sub("-", text.lower()).strip("-") or "x"
    if len(cleaned) <= max_len and (cleaned == text or not hash_repairs):
        return cleaned
    digest = short_hash(text)
    head = cleaned[: max_len - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest


def sandbox_key(sandbox: Sandbox) -> str:
    """``<namespace>/<name>``: the identity a workspace namespace records as its holder."""
    return f"{sandbox.namespace}/{sandbox.name}"


def sandbox_label(sandbox: Sandbox) -> str:
    """The ``openova.io/sandbox`` label value: the name, unless it is too long for a
    label (a Sandbox name may have 253 characters when made with kubectl)."""
    return label_value(sandbox.name)


def owner_label(sandbox: Sandbox) -> str:
    return dns_label(owner_uid(sandbox.spec.owner_email))


def plain_namespace(sandbox: Sandbox) -> str:
    """``sandbox-<owner-uid>``: the workspace namespace of an owner's first sandbox."""
    return dns_label(NAMESPACE_PREFIX + owner_uid(sandbox.spec.owner_email))


def hashed_namespace(sandbox: Sandbox) -> str:
    """``sandbox-<owner-uid>-<hash of namespace/name>``: for an owner's further sandboxes."""
    digest = short_hash(sandbox.namespace, sandbox.name)
    base = dns_label(
        NAMESPACE_PREFIX + owner_uid(sandbox.spec.owner_email),
        max_len=MAX_LABEL - len(digest) - 1,
    )
    return f"{base}-{digest}"


def repo_slug(repo: str) -> str:
    """Readable on purpose (``API.Server`` → ``api-server``); the renderer refuses two
    repos of one sandbox that map to the same slug."""
    return dns_label(repo_name(repo), max_len=MAX_LABEL - len("repo-"), hash_repairs=False)


def repo_pvc(repo: str) -> str:
    return f"repo-{repo_slug(repo)}"
