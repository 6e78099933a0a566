"""Names derived from requests and claims: object id, namespace, org slug, owner-uid.

All rules are from sessions-api.md / sandbox-resource.md and are deterministic on
purpose (a second unnamed create of the same agent by the same user conflicts), with
two departures (issue 11, docs/api.md): the default id is ``<agent>-<8 hex digits of
sha256(sub)>`` instead of ``<agent>-<sub[:8]>`` (two subjects sharing their first eight
characters got the same id, so one member could hold another's default id and make
their unnamed create answer 409 forever), and a repo belongs to the org whose id *is*
its org part (``repo_access_problem``), never to an org that only slugs to it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

DEFAULT_NAMESPACE = "catalyst-system"
MAX_NAME = 63
MAX_OWNER_UID = 200

_DEFAULT_TAIL = re.compile(r"[0-9a-f]{8}")
_SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{2,31}$")
_INVALID_RUN = re.compile(r"[^a-z0-9-]+")
# matched against the whole string (fullmatch: ``$`` alone also matches before a final
# newline, and ``acme/x\n`` then passed)
REPO_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*/[A-Za-z0-9._-]+")
REPO_ORG_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")  # the org part of REPO_RE
MAX_REPO_ORG = 63  # the org part: a DNS label's length, like the org's slug and names
MAX_REPO_NAME = 100  # the repo part: what Gitea and GitHub allow
SESSION_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


DEFAULT_ID_HASH = 8  # hex digits of sha256(sub) in a default id


def default_id(agent: str, sub: str) -> str:
    """``<agent>-<first 8 hex digits of sha256(sub)>``: the id of an unnamed create,
    derived from the whole subject."""
    return f"{agent}-{short_hash(sub, length=DEFAULT_ID_HASH)}"


def object_name(*, agent: str, sub: str, name: str | None) -> str:
    """The Sandbox id: from ``name`` when given, else ``default_id(agent, sub)``."""
    source = name if name is not None and name.strip() else default_id(agent, sub)
    text = _INVALID_RUN.sub("-", source.strip().lower()).strip("-")
    if not text:
        return f"sandbox-{agent}"
    if len(text) > MAX_NAME:
        text = text[:MAX_NAME].rstrip("-")
    return text


def reserved_name_problem(sandbox_id: str, *, sub: str, agents: Iterable[str]) -> str:
    """Why a *named* create may not take ``sandbox_id`` ("" when it may): an id of the
    shape of a default id (``<agent>-<8 hex digits>`` for an agent of the catalogue) is
    kept for the subject it is derived from, so nobody can hold another member's default
    id by naming a sandbox after it."""
    for agent in agents:
        head = f"{agent}-"
        tail = sandbox_id[len(head) :]
        if (
            sandbox_id.startswith(head)
            and _DEFAULT_TAIL.fullmatch(tail)
            and sandbox_id != default_id(agent, sub)
        ):
            return (
                f'"{sandbox_id}" has the form of a default id (<agent>-<8 hex digits>), '
                "which is kept for the user it is derived from; choose another name"
            )
    return ""


def display_name(name: str | None) -> str:
    return name.strip() if name else ""


def namespace_for(org: str, default_namespace: str | None) -> str:
    """The caller's org verbatim (trimmed), else the configured default, else catalyst-system."""
    org = org.strip()
    if org:
        return org
    if default_namespace and default_namespace.strip():
        return default_namespace.strip()
    return DEFAULT_NAMESPACE


def org_slug(org: str) -> str:
    candidate = org.strip().lower()
    return candidate if _SLUG_RE.match(candidate) else "default"


def is_valid_slug(value: str) -> bool:
    return bool(_SLUG_RE.match(value))


def owner_uid(email: str) -> str:
    """``dev@acme.com`` → ``dev-at-acme-com``."""
    text = email.strip().lower()
    for old, new in (("@", "-at-"), (".", "-"), ("+", "-plus-"), ("_", "-")):
        text = text.replace(old, new)
    return text[:MAX_OWNER_UID].strip("-")


_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_LABEL_VALUE_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: verbatim when it already is one, otherwise
    cleaned, cut and suffixed with a hash of the original, so two different texts never
    share a value (``o'neil-at-acme-com`` → ``o-neil-at-acme-com-<hash>``)."""
    if _LABEL_VALUE_RE.match(text):
        return text
    cleaned = _LABEL_VALUE_INVALID.sub("-", text)
    digest = short_hash(text)
    head = cleaned[: 63 - len(digest) - 1]
    head = re.sub(r"^[-_.]+|[-_.]+$", "", head)
    return f"{head}-{digest}" if head else digest


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def repo_problem(repo: str) -> str:
    """Why ``repo`` is not a repo this service clones ("" when it is one). The one check
    of the API's create and of the controller."""
    if not REPO_RE.fullmatch(repo) or repo_name(repo) in {".", ".."}:
        return "is not of the form <org>/<name> (lowercase org; letters, digits, '.', '_' and '-')"
    if len(repo_org(repo)) > MAX_REPO_ORG:
        return f"has an org part longer than {MAX_REPO_ORG} characters"
    if len(repo_name(repo)) > MAX_REPO_NAME:
        return f"has a name longer than {MAX_REPO_NAME} characters"
    return ""


def repo_access_problem(repo: str, org: str) -> str:
    """Why the caller's org may not clone ``repo`` ("" when it may). A repo's org part
    must be the org's id itself (the ``org`` claim, trimmed: the id the namespace is
    made of), not its slug: slugs collide ("Acme Inc" and "Default Corp" both slug to
    ``default``, ``ACME`` slugs to ``acme``, another org's id). So an org whose id is
    not a possible repo org (upper case, spaces, ...) and a caller without an org own
    no repos."""
    owner = repo_org(repo)
    org = org.strip()
    if org == owner:
        return ""
    if not org:
        return (
            f'repo "{repo}" belongs to org "{owner}"; a caller without an org '
            "(no org_id claim) clones no repos"
        )
    if not REPO_ORG_RE.fullmatch(org):
        return (
            f'repo "{repo}" belongs to org "{owner}", not to your org "{org}"; an org id '
            "that is not lowercase letters, digits, '.', '_' and '-' owns no repos, "
            "so its members clone none"
        )
    return f'repo "{repo}" belongs to org "{owner}", not to your org "{org}"'


def is_valid_repo(repo: str) -> bool:
    return not repo_problem(repo)


def repo_org(repo: str) -> str:
    return repo.split("/", 1)[0]


def repo_name(repo: str) -> str:
    return repo.split("/", 1)[1]
