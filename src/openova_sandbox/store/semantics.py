"""The apiserver rules every self-hosted backend applies, as pure functions on documents.

The memory and SQL stores both keep the Kubernetes JSON document of each object and move
it through the same transitions, so their behaviour cannot drift apart: each function
takes the stored document (a plain ``dict`` in Kubernetes shape) and the caller's
``Sandbox`` and returns the next document, or ``None`` when nothing would change (a
no-op write keeps its resourceVersion and emits no event, as the apiserver does).

Timestamps are cut to whole seconds when assigned: Kubernetes serialises metadata times
with second precision, and a value must read back exactly as it was returned.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime

from ..domain.errors import AlreadyExists, Conflict, Invalid, NotFound
from ..domain.model import JSON, Sandbox, format_time, utcnow

# Fields of ``metadata`` only the store writes; callers' values for them are ignored.
SYSTEM_FIELDS = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)


def now_seconds() -> datetime:
    return utcnow().replace(microsecond=0)


def new_uid() -> str:
    return str(uuid.uuid4())


def not_found(namespace: str, name: str) -> NotFound:
    return NotFound(f'sandbox "{name}" not found in namespace "{namespace}"')


def already_exists(namespace: str, name: str) -> AlreadyExists:
    return AlreadyExists(f'sandbox "{name}" already exists in namespace "{namespace}"')


def parse_version(value: str | None) -> int | None:
    """``None`` stays ``None``; anything else must be a non-negative decimal string."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise Invalid(
            f'resourceVersion "{value}" is not a decimal number',
            code="invalid-resource-version",
        )
    return int(text)


def too_old(since: int, oldest: int) -> Conflict:
    return Conflict(
        f"resourceVersion {since} is too old: events up to {oldest} were compacted; "
        "list again and watch from the list's resourceVersion",
        code="resource-version-too-old",
    )


def check_key(sandbox: Sandbox) -> tuple[str, str]:
    namespace, name = sandbox.namespace, sandbox.name
    if not name:
        raise Invalid("metadata.name is required", code="invalid-name")
    if not namespace:
        raise Invalid("metadata.namespace is required", code="invalid-namespace")
    return namespace, name


def check_version(stored: JSON, sandbox: Sandbox) -> None:
    """The optimistic-concurrency rule: the caller must have seen the current version."""
    current = str(stored["metadata"].get("resourceVersion", ""))
    given = sandbox.metadata.resource_version
    if given != current:
        raise Conflict(
            f'sandbox "{sandbox.name}" in namespace "{sandbox.namespace}" was modified: '
            f'resourceVersion "{given}" is not the current "{current}"; '
            "read it again and retry"
        )


def version_of(document: JSON) -> int:
    return int(document["metadata"]["resourceVersion"])


def is_marked(document: JSON) -> bool:
    return bool(document["metadata"].get("deletionTimestamp"))


def has_finalizers(document: JSON) -> bool:
    return bool(document["metadata"].get("finalizers"))


def created_document(sandbox: Sandbox, *, uid: str, version: int, now: datetime) -> JSON:
    """The document a create stores. Status is not writable through create (the status
    subresource rule), so it starts empty; deletionTimestamp cannot be preset."""
    document = Sandbox(metadata=sandbox.metadata, spec=sandbox.spec).to_dict()
    meta = document["metadata"]
    for key in SYSTEM_FIELDS:
        meta.pop(key, None)
    meta.update(
        {
            "uid": uid,
            "resourceVersion": str(version),
            "generation": 1,
            "creationTimestamp": format_time(now),
        }
    )
    return document


def updated_document(stored: JSON, sandbox: Sandbox) -> JSON | None:
    """Replace metadata (except system fields) and spec; keep status. ``None``: no-op.

    Like every function here it returns a document that shares nothing with ``stored``
    or ``sandbox``; only the fields it keeps are copied from ``stored``."""
    meta = sandbox.metadata.to_dict()
    for key in SYSTEM_FIELDS:
        meta.pop(key, None)
        if key in stored["metadata"]:
            meta[key] = copy.deepcopy(stored["metadata"][key])
    replaced = {"metadata": meta, "spec": sandbox.spec.to_dict()}
    document: JSON = {}
    for key, value in stored.items():  # in the stored order, as a deep copy would be
        document[key] = replaced.pop(key) if key in replaced else copy.deepcopy(value)
    document.update(replaced)  # metadata or spec the stored document lacked
    if document == stored:
        return None
    if document["spec"] != stored["spec"]:
        document["metadata"]["generation"] = int(stored["metadata"].get("generation", 1)) + 1
    return document


def status_document(stored: JSON, sandbox: Sandbox) -> JSON | None:
    """Replace only status. ``None``: no-op."""
    status = sandbox.status.to_dict()
    if status == stored.get("status"):
        return None
    document: JSON = {}
    for key, value in stored.items():
        document[key] = status if key == "status" else copy.deepcopy(value)
    document["status"] = status
    return document


def marked_document(stored: JSON, *, now: datetime) -> JSON:
    document = copy.deepcopy(stored)
    document["metadata"]["deletionTimestamp"] = format_time(now)
    return document


def stamped(document: JSON, version: int) -> JSON:
    """The document at its new resourceVersion (a copy)."""
    return stamp(copy.deepcopy(document), version)


def stamp(document: JSON, version: int) -> JSON:
    """``document`` itself at its new resourceVersion: for a document the caller owns
    (one the functions above just made, or one a transaction just read), where
    ``stamped`` would copy it a second time."""
    document["metadata"]["resourceVersion"] = str(version)
    return document
