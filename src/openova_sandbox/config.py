"""The one Settings object, read from the environment at entry points and passed down.

Names follow the specs: ``SANDBOX_*`` for this project's own settings, plus the names the
existing deployment already uses (``CATALYST_SANDBOX_DEFAULT_NAMESPACE``,
``OPENOVA_SANDBOX_AGENTS_PATH``). An invalid value fails at start with a message naming
the variable (see :func:`load_settings`).

``Settings`` is a plain frozen dataclass with its own small environment reader, so the
terminal server's pod (``sandbox pty-server``) reads it without pydantic (docs/terminal.md,
"pty-server RSS"); the control plane uses the same class. Its reading rules are those of
the pydantic-settings class it replaced, kept exactly:

- a field is read from ``SANDBOX_<FIELD>``; a field with aliases from its aliases first,
  in order, then ``SANDBOX_<FIELD>``; names match case-insensitively;
- keyword arguments (CLI flags, tests) win over the environment and may name a field or
  one of its aliases; unknown ones are ignored;
- values are checked and converted as the old class did: integers from ``" 4 "``,
  ``"+4"``, ``"4.0"`` or ``"1_000"`` (not ``"4.5"``), booleans from
  ``1/0/true/false/yes/no/on/off/t/f/y/n`` in any case, ``Literal`` choices exactly,
  bounds inclusive; every problem is reported, in field order, with the variable's name.

``Settings(...)`` built directly takes its values from the arguments and defaults only
(no environment), checked the same way; :func:`load_settings` is the reader.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import __version__
from .domain.errors import Invalid

if TYPE_CHECKING:  # the budgets' parser (and decimal) load when a budget is set
    from decimal import Decimal

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)?$")
_CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
RING_MAX = 16 * 1024 * 1024
RING_DEFAULT = 1024 * 1024
# client ids that only hold a place in a seed or template: setup is still pending
PLACEHOLDER_CLIENT_IDS = frozenset({"REPLACE_ME", "PLACEHOLDER-AWAITING-FOUNDER-REGISTRATION"})


def clamp_ring_bytes(value: int | None, default: int = RING_DEFAULT) -> int:
    """Replay budget rule: invalid/≤0 keeps the default, above 16 MiB is clamped."""
    if value is None or value <= 0:
        return default
    return min(value, RING_MAX)


def _env(*names: str) -> dict[str, Any]:
    """Field metadata: the environment names (aliases) read before ``SANDBOX_<FIELD>``."""
    return {"aliases": names}


def _bounded(ge: int, le: int, *aliases: str) -> dict[str, Any]:
    return {"ge": ge, "le": le, "aliases": aliases}


# field metadata: a setting of the claim mapping (see ``claim_mapping_env``)
_CLAIM_MAPPING: dict[str, Any] = {"claim_mapping": True}


@dataclass(frozen=True)
class Settings:
    # --- storage --------------------------------------------------------------------
    data_dir: Path = Path(".sandbox")
    database_url: str = ""  # empty: SQLite file in data_dir
    store: Literal["sql", "memory", "kube"] = "sql"

    # --- tenancy and quota defaults ---------------------------------------------------
    default_namespace: str = field(default="", metadata=_env("CATALYST_SANDBOX_DEFAULT_NAMESPACE"))
    default_quota_cpu: str = "4"
    default_quota_memory: str = "8Gi"
    default_quota_storage: str = "50Gi"
    default_quota_sessions: int = field(default=3, metadata=_bounded(1, 10))

    # --- agents -----------------------------------------------------------------------
    agents_path: str = field(
        default="/etc/openova/sandbox-agents.json", metadata=_env("OPENOVA_SANDBOX_AGENTS_PATH")
    )
    # the agents the sessions API offers (comma list; empty: every catalogue agent)
    agents: tuple[str, ...] = field(default=(), metadata=_env("SANDBOX_AGENTS", "agents"))
    # Kubernetes mode: the agents the sandbox image carries (comma or space list, as the
    # image's AGENTS build argument); create refuses the others with agent-not-installed.
    # Empty: installation is not checked there.
    image_agents: tuple[str, ...] = ()
    ring_buffer_bytes: int = RING_DEFAULT
    # lines of scrollback each terminal's server-side screen keeps (sent on attach/resync)
    screen_scrollback_lines: int = field(default=1000, metadata=_bounded(0, 100_000))
    # sandbox.v2: how far (bytes) a viewer may be past its last ack before it gets a
    # snapshot instead of a queue (SANDBOX_VIEWER_WINDOW_BYTES; docs/terminal.md)
    viewer_window_bytes: int = field(
        default=1024 * 1024, metadata=_bounded(64 * 1024, 64 * 1024 * 1024)
    )
    # a URL that gets every terminal's busy/waiting/idle transition as a JSON POST
    # (SANDBOX_NOTIFY_WEBHOOK; empty: off; docs/activity.md). It may hold a secret
    # (userinfo, a token in the query): never logged, never shown in repr.
    notify_webhook: str = field(default="", repr=False)
    git_base_url: str = ""
    llm_gateway_url: str = field(default="", metadata=_env("LLM_GATEWAY_URL"))
    openai_base_url: str = field(default="", metadata=_env("OPENAI_BASE_URL"))
    openai_api_key: str = field(default="", repr=False, metadata=_env("OPENAI_API_KEY"))

    # --- the model the agents ask for (SANDBOX_AGENT_MODEL) ------------------------------
    # passed to every agent as SANDBOX_AGENT_MODEL; the catalogue rows hand it on the way
    # each agent reads it (OPENAI_MODEL, AIDER_MODEL, opencode's config). Set it to a model
    # that OPENAI_BASE_URL serves; the default is one of OpenAI's own.
    agent_model: str = "gpt-4.1-mini"

    # --- model gateway budgets: monthly defaults in USD (empty: no cap); budgets set
    # through PUT /api/v1/sandbox/budgets/{scope}/{name} override them
    budget_org_usd: Decimal | None = None
    budget_user_usd: Decimal | None = None
    budget_sandbox_usd: Decimal | None = None

    # --- quotas per user and org (issue 11; docs/api.md, "Quotas"): name=value pairs
    # over the built-in defaults (sandboxes, terminals, websockets, waitingAttaches;
    # "none": no limit); org admins override them per org and user, never above the org's
    quota_user: str = ""
    quota_org: str = ""
    # personal access tokens (docs/api.md): the expiry a token gets when none is asked
    # for, and the longest one may have, in days
    pat_default_days: int = field(default=30, metadata=_bounded(1, 3650))
    pat_max_days: int = field(default=365, metadata=_bounded(1, 3650))

    # --- model gateway upstreams (docs/gateway.md): SANDBOX_LLM_CONFIG names the
    # operator's YAML/JSON file; without it OPENAI_* above and ANTHROPIC_* are the zero
    # config (one pass-through provider each)
    llm_config: str = ""
    # the model gateway a standalone `sandbox pty-server` gives its terminals (its root,
    # without /llm; Kubernetes: the operator renders the gateway Service's URL) and the
    # sandbox's own gateway token for it (docs/gateway.md, "Per-sandbox credentials")
    model_gateway_url: str = ""
    model_gateway_token: str = field(default="", repr=False)
    # the MCP server a standalone `sandbox pty-server`'s agents reach and the sandbox's
    # MCP token for it (Kubernetes: rendered by the operator, the token from its Secret;
    # docs/mcp.md, "Server and tokens"); both or nothing
    mcp_url: str = ""
    mcp_token: str = field(default="", repr=False)
    anthropic_base_url: str = field(default="", metadata=_env("ANTHROPIC_BASE_URL"))
    anthropic_api_key: str = field(default="", repr=False, metadata=_env("ANTHROPIC_API_KEY"))

    # --- terminal server (standalone `sandbox pty-server`: one per Sandbox in Kubernetes) ---
    pty_sandbox_id: str = field(default="", metadata=_env("SANDBOX_ID", "pty_sandbox_id"))
    pty_namespace: str = field(default="", metadata=_env("SANDBOX_NAMESPACE", "pty_namespace"))
    pty_owner_email: str = field(
        default="", metadata=_env("SANDBOX_OWNER_EMAIL", "pty_owner_email")
    )
    pty_org_id: str = field(default="", metadata=_env("SANDBOX_ORG_ID", "pty_org_id"))
    # the owner's token subject: when set, ownership is by subject, not by email
    pty_owner_sub: str = field(default="", metadata=_env("SANDBOX_OWNER_SUB", "pty_owner_sub"))
    pty_default_agent: str = field(
        default="", metadata=_env("SANDBOX_DEFAULT_AGENT", "pty_default_agent")
    )
    pty_session_limit: int = field(
        default=3, metadata=_bounded(1, 10, "SANDBOX_SESSION_LIMIT", "pty_session_limit")
    )
    pty_workdir: str = field(default="", metadata=_env("SANDBOX_WORKDIR", "pty_workdir"))
    # the pod's event loop (SANDBOX_PTY_EVENT_LOOP): uvloop when installed ("auto"), or
    # asyncio's own: 2 MiB less idle RSS, ~50 us more per keystroke (docs/terminal.md)
    pty_event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    # opens /idle only: the operator probes idleness with it (from the pty-probe Secret)
    probe_token: str = field(default="", repr=False)
    # the pod's share grant key (from its sandbox-share-grant Secret): it admits the
    # viewers of share links the control plane vouches for (docs/shares.md); empty: none
    share_grant_key: str = field(default="", repr=False)

    # --- Kubernetes mode (operator rendering; env SANDBOX_KUBE_*) -----------------------
    # pinned to this release (a :latest tag is neither reproducible nor rewritten by
    # kustomize `images:`); the base sets it from the operator's environment
    kube_image: str = f"ghcr.io/openova/sandbox:{__version__}"
    kube_git_image: str = "alpine/git:2.45.2"
    kube_repo_storage: str = "5Gi"
    kube_home_storage: str = "5Gi"
    kube_storage_class: str = ""
    kube_gateway_name: str = "catalyst-gateway"
    kube_gateway_namespace: str = "catalyst-system"
    kube_control_plane_namespace: str = "catalyst-system"
    kube_sandbox_host: str = ""
    # the model gateway's Service as sandbox pods reach it (deploy/kubernetes/gateway.yaml)
    kube_model_gateway_url: str = "http://sandbox-gateway.catalyst-system.svc"
    kube_mcp_url: str = ""
    # mount the sandbox ServiceAccount's token in the pod (only when the MCP server
    # authenticates agents by it; off: no Kubernetes credential inside the sandbox)
    kube_mcp_needs_token: bool = False
    # how the control plane reaches a sandbox's terminal server; {namespace} is the
    # sandbox's workspace namespace
    kube_pty_url_template: str = "http://pty-server.{namespace}.svc:7681"
    # where the API's preview proxy reaches a preview ({namespace}, {port}): its Service
    # (controller/kube/preview_render.upstream_url); the port must be {port}
    kube_preview_url_template: str = "http://preview-{port}.{namespace}.svc:{port}"
    # the API as sandbox pods reach it: without an external issuer their terminal
    # servers trust the API's shared embedded issuer through its JWKS there
    kube_api_url: str = "http://sandbox-api.catalyst-system.svc"
    # each sandbox pod: the share of its quota it requests (limits: the whole quota),
    # its /tmp size and ephemeral-storage limit, and the namespaces besides the
    # gateway's and the control plane's whose pods may open it (the data plane)
    kube_request_percent: int = field(default=10, metadata=_bounded(1, 100))
    kube_tmp_size: str = "1Gi"
    kube_ephemeral_storage: str = "4Gi"
    kube_ingress_namespaces: tuple[str, ...] = ()
    # each sandbox's HTTPRoute: auto (when the Gateway API is installed at the
    # operator's start), on, off (the API proxies terminals itself either way)
    kube_http_route: Literal["auto", "on", "off"] = "auto"
    # the API creates an org's namespace on its first Sandbox (needs the RBAC of
    # deploy/kubernetes/components/org-namespaces); off: namespace-not-found
    kube_create_org_namespaces: bool = False
    # the product's event stream (docs/mcp.md, "Live resources and events"): empty, in
    # this process only; nats://host:4222 (or tls://): NATS JetStream, for several API
    # replicas. One stream per deployment; one durable consumer per replica (empty: the
    # host name, a pod's name)
    events_url: str = ""
    events_stream: str = "SANDBOX_EVENTS"
    events_replica: str = ""
    # the API's and the operator's shared secret from which each sandbox's share grant
    # key is derived (Secret sandbox-share-grant; docs/kubernetes.md); empty: share
    # links are refused in Kubernetes mode
    share_grant_secret: str = field(default="", repr=False)

    # --- auth -------------------------------------------------------------------------
    oidc_issuer: str = ""
    oidc_audience: str = ""
    jwks_url: str = ""
    # console and CLI sign-in with that issuer (docs/auth.md, "Signing in with OIDC"):
    # the client registered there; the secret is empty for a public client (PKCE only);
    # the CLI's client (public: a secret cannot be kept on a laptop), default the same
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    oidc_cli_client_id: str = ""
    oidc_scopes: str = "openid email profile"
    # claim mapping: where the org comes from and who is an org admin (auth/claims.py);
    # marked: the operator passes each marked field on to the sandbox pods, whose terminal
    # servers map the tokens the control plane relays (claim_mapping_env)
    oidc_org_claim: str = field(default="org_id", metadata=_CLAIM_MAPPING)
    oidc_org_group_prefix: str = field(default="", metadata=_CLAIM_MAPPING)
    oidc_admin_roles: str = field(default="org-admin", metadata=_CLAIM_MAPPING)
    oidc_admin_groups: str = field(default="", metadata=_CLAIM_MAPPING)
    oidc_admin_tier: str = field(default="admin", metadata=_CLAIM_MAPPING)
    cookie_secret: str = field(default="", repr=False)
    # the embedded issuer's signing key (PEM, P-256) when several servers must sign and
    # trust the same tokens (Kubernetes: every API replica, from the Secret
    # sandbox-issuer-key, docs/kubernetes.md); empty: the data dir's own key
    issuer_key: str = field(default="", repr=False)
    public_url: str = ""  # how browsers reach us; WebSocket Origin is checked against it

    # --- BYOS (Claude Code) -------------------------------------------------------------
    byos_claude_code_enabled: str = ""
    byos_claude_code_client_id: str = ""
    byos_claude_code_authz_url: str = ""
    byos_claude_code_token_url: str = ""
    # RFC 7009 revocation endpoint; empty: the provider has none, disconnect only forgets
    byos_claude_code_revoke_url: str = ""
    byos_claude_code_callback_path: str = "/api/v1/sandbox/byos/claude-code/callback"
    byos_claude_code_scopes: tuple[str, ...] = ("read:user", "write:claude-code")

    # --- embedded isolation (issue 12; docs/architecture.md, "Isolation") -------------
    # auto: each sandbox in a bubblewrap view of its own when the kernel allows it, else
    # none with a warning (and no start with an external issuer: several users); bwrap:
    # required; none: every terminal runs as this server's user, seeing what it sees
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    # more read-only paths inside every sandbox (comma list: /nix, a toolchain's prefix)
    isolation_paths: tuple[str, ...] = ()
    # processes (and threads) one sandbox may have at once
    isolation_processes: int = field(default=1024, metadata=_bounded(16, 1_000_000))
    # the network inside sandboxes (off: loopback only); orgs whose sandboxes never
    # have it (comma list of orgs as sandboxes record them: owner.orgRef.slug)
    isolation_network: bool = True
    isolation_offline_orgs: tuple[str, ...] = ()
    # per-sandbox cgroups where this server may make them (pids, memory, CPU rate);
    # off: rlimits only (joining cgroups costs a few ms per spawn; docs/architecture.md)
    isolation_cgroups: bool = True

    # --- the MCP server (issue 14; docs/mcp.md, "Capabilities and plans") -------------
    # plans as JSON {"plan": ["session.*", "usage.get", ...]} (empty: the built-in
    # sandbox-free, sandbox-pro and sandbox-ent), the plan of each org as JSON
    # {"org": "plan"}, and the plan of the orgs not named there
    mcp_plans: str = ""
    mcp_org_plans: str = ""
    mcp_default_plan: str = "sandbox-pro"

    # --- logging ----------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool | None = None  # None: JSON when stderr is not a TTY

    def __post_init__(self) -> None:
        """Every value checked and converted (strings from the environment included);
        all problems at once, each naming its variable."""
        problems = []
        for spec in _specs():
            try:
                value = spec.convert(getattr(self, spec.name))
            except ValueError as exc:
                problems.append(f"{spec.env_name}: {exc}")
                continue
            object.__setattr__(self, spec.name, value)
        if problems:
            raise Invalid("invalid settings: " + "; ".join(problems), code="invalid-settings")

    @property
    def byos_enabled(self) -> bool:
        """Empty means enabled; when set, exactly ``true`` or ``1`` (sessions-api.md)."""
        raw = self.byos_claude_code_enabled.strip()
        return raw == "" or raw in {"true", "1"}

    @property
    def byos_client_id_configured(self) -> bool:
        cid = self.byos_claude_code_client_id.strip()
        return bool(cid) and cid not in PLACEHOLDER_CLIENT_IDS

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'sandbox.db').resolve()}"

    @property
    def quota_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.default_quota_cpu,
            "memory": self.default_quota_memory,
            "storage": self.default_quota_storage,
            "concurrentSessions": self.default_quota_sessions,
        }


# ------------------------------------------------------------------ value checks
_INT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Input should be a valid string")
    return value


def _path(value: Any) -> Path:
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise ValueError("Input should be a valid path")


def _int(value: Any) -> int:
    """An integer as pydantic's lax mode reads one (the terminal server's request bodies
    use the same rule, :mod:`openova_sandbox.api.terminal_edge.pty_app`)."""
    if isinstance(value, int):  # bool too: True is 1
        return int(value)
    if isinstance(value, float) or type(value).__name__ == "Decimal":
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("Input should be a finite number")
        if value != int(value):
            raise ValueError("Input should be a valid integer, got a number with a fractional part")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _INT.fullmatch(text):
            return int(text.partition(".")[0])
        raise ValueError("Input should be a valid integer, unable to parse string as an integer")
    raise ValueError("Input should be a valid integer")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    if isinstance(value, str | int):
        raise ValueError("Input should be a valid boolean, unable to interpret input")
    raise ValueError("Input should be a valid boolean")


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ValueError("Input should be a valid tuple")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("Input should be a valid string")
    return tuple(value)


def _budget(value: Any) -> Decimal | None:
    """``""`` → no cap; else a non-negative amount in USD."""
    if value is None or value == "":
        return None
    from .domain.ledger import parse_budget

    try:
        return parse_budget(value)
    except Invalid as exc:
        raise ValueError(f"Value error, {exc.detail}") from exc


def _cpu(value: str) -> str:
    if not _CPU.match(value):
        raise ValueError(f"Value error, {value!r} is not a CPU quantity like 4, 0.5 or 500m")
    return value


def _quotas(scope: str) -> Any:
    def check(value: str) -> str:
        if not value.replace(",", "").strip():  # no pairs: the defaults (nothing to load)
            return value
        from .domain.quotas import DEFAULT_ORG, DEFAULT_USER, parse_quota_setting

        defaults = DEFAULT_ORG if scope == "org" else DEFAULT_USER
        variable = f"SANDBOX_QUOTA_{scope.upper()}"
        try:
            parse_quota_setting(value, defaults, variable=variable)
        except Invalid as exc:
            raise ValueError(f"Value error, {exc.detail.removeprefix(variable + ': ')}") from exc
        return value

    return check


def _json_map(value: str, *, of: str) -> str:
    """A JSON object whose values are each ``of`` (a string, or a list of strings);
    empty: not set."""
    if not value.strip():
        return value
    import json

    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"Value error, not JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ValueError("Value error, not a JSON object")
    for key, item in parsed.items():
        ok = (
            isinstance(item, str)
            if of == "a string"
            else isinstance(item, list) and all(isinstance(i, str) for i in item)
        )
        if not ok:
            raise ValueError(f"Value error, the value of {key!r} is not {of}")
    return value


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"Value error, {value!r} is not a quantity like 8Gi or 512Mi")
    return value


def _ring(value: Any) -> int:
    try:
        return clamp_ring_bytes(int(value))
    except (TypeError, ValueError):
        return RING_DEFAULT


def _events_url(value: str) -> str:
    value = value.strip()
    if value and not re.match(r"^(nats|tls)://[^/\s]+/?$", value):
        raise ValueError("Value error, not a NATS URL (nats://host:4222 or tls://host:4222)")
    return value


def _stream_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ValueError(
            "Value error, not 1 to 64 letters, digits, '_' or '-' (a JetStream stream name)"
        )
    return value


def _word_list(value: Any) -> Any:
    """``"aider opencode"`` or ``"aider,opencode"`` → ``("aider", "opencode")``."""
    if isinstance(value, str):
        return tuple(s for s in re.split(r"[\s,]+", value) if s)
    return value


def _comma_list(value: Any) -> Any:
    """``"a, b,"`` from the environment → ``("a", "b")``."""
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    return value


# validators run before the type's own check (``mode="before"``) or after it
_BEFORE: dict[str, Any] = {
    "budget_org_usd": _budget,
    "budget_user_usd": _budget,
    "budget_sandbox_usd": _budget,
    "ring_buffer_bytes": _ring,
    "image_agents": _word_list,
    "agents": _comma_list,
    "byos_claude_code_scopes": _comma_list,
    "isolation_paths": _comma_list,
    "isolation_offline_orgs": _comma_list,
    "kube_ingress_namespaces": _comma_list,
}
_AFTER: dict[str, Any] = {
    "default_quota_cpu": _cpu,
    "default_quota_memory": _quantity,
    "default_quota_storage": _quantity,
    "kube_repo_storage": _quantity,
    "kube_home_storage": _quantity,
    "quota_user": _quotas("user"),
    "quota_org": _quotas("org"),
    "mcp_plans": lambda value: _json_map(value, of="a list of strings"),
    "events_url": _events_url,
    "events_stream": _stream_name,
    "mcp_org_plans": lambda value: _json_map(value, of="a string"),
}


@dataclass(frozen=True)
class _Spec:
    """How one field is read: its environment names, type check and validators."""

    name: str
    envs: tuple[str, ...]  # lower-case, in the order they are looked up
    keys: tuple[str, ...]  # keyword arguments that set it: its name and its aliases
    env_name: str  # the name errors report
    check: Any
    ge: int | None = None
    le: int | None = None

    def convert(self, value: Any) -> Any:
        before = _BEFORE.get(self.name)
        if before is not None:
            value = before(value)
        value = self.check(value)
        if self.ge is not None and value < self.ge:
            raise ValueError(f"Input should be greater than or equal to {self.ge}")
        if self.le is not None and value > self.le:
            raise ValueError(f"Input should be less than or equal to {self.le}")
        after = _AFTER.get(self.name)
        return after(value) if after is not None else value


def _literal(choices: tuple[str, ...]) -> Any:
    said = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"

    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise ValueError(f"Input should be {said}")

    return check


def _optional(check: Any) -> Any:
    return lambda value: None if value is None else check(value)


_SIMPLE: dict[str, Any] = {
    "str": _str,
    "Path": _path,
    "int": _int,
    "bool": _bool,
    "Decimal": lambda value: value,  # the budgets: _budget has made it one, or None
}


def _check_of(annotation: str) -> Any:
    """The check of a field's type, read from its annotation's text (no
    ``get_type_hints``: ``Decimal`` is not imported unless a budget is set)."""
    text = annotation.replace(" ", "")
    if text.startswith("Literal["):
        return _literal(tuple(re.findall(r"""['"]([^'"]*)['"]""", text)))
    if text.endswith("|None"):
        return _optional(_check_of(text.removesuffix("|None")))
    if text == "tuple[str,...]":
        return _strings
    return _SIMPLE[text]


_SPECS: tuple[_Spec, ...] = ()


def _specs() -> tuple[_Spec, ...]:
    global _SPECS
    if not _SPECS:
        built = []
        for f in fields(Settings):
            aliases: tuple[str, ...] = f.metadata.get("aliases", ())
            own = f"SANDBOX_{f.name.upper()}"
            built.append(
                _Spec(
                    name=f.name,
                    envs=tuple(n.lower() for n in (*aliases, own)),
                    keys=(f.name, *aliases),
                    env_name=aliases[0] if aliases else own,
                    check=_check_of(str(f.type)),
                    ge=f.metadata.get("ge"),
                    le=f.metadata.get("le"),
                )
            )
        _SPECS = tuple(built)
    return _SPECS


check_int = _int
check_str = _str


def env_name(name: str) -> str:
    """The environment variable a Settings field is read from first (its first alias,
    else ``SANDBOX_<FIELD>``)."""
    for spec in _specs():
        if spec.name == name:
            return spec.env_name
    raise KeyError(name)


def claim_mapping_env(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Every claim-mapping setting (the fields marked so) as ``(variable, value)``, each
    one also when empty or default: what a sandbox pod is given so that its terminal
    server maps the tokens the control plane relays to it as the control plane does
    (docs/auth.md, "Kubernetes mode's sandbox pods")."""
    return tuple(
        (env_name(f.name), str(getattr(settings, f.name)))
        for f in fields(Settings)
        if f.metadata.get("claim_mapping")
    )


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (plus explicit overrides from CLI flags; an
    override of ``None`` is no override).

    Raises :class:`Invalid` naming the environment variable on a bad value.
    """
    environ = {name.lower(): value for name, value in os.environ.items()}
    values: dict[str, Any] = {}
    for spec in _specs():
        for key in spec.keys:
            if overrides.get(key) is not None:
                values[spec.name] = overrides[key]
                break
        else:
            for env in spec.envs:
                if env in environ:
                    values[spec.name] = environ[env]
                    break
    return Settings(**values)
