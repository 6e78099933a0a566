"""The one Settings object, read from the environment at entry points and passed down.

Names follow the specs: ``SANDBOX_*`` for this project's own settings, plus the names the
existing deployment already uses (``CATALYST_SANDBOX_DEFAULT_NAMESPACE``,
``OPENOVA_SANDBOX_AGENTS_PATH``). An invalid value fails at start with a message naming
the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .domain.errors import Invalid
from .domain.ledger import parse_budget

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SANDBOX_", extra="ignore", frozen=True, populate_by_name=True
    )

    # --- storage --------------------------------------------------------------------
    data_dir: Path = Path(".sandbox")
    database_url: str = ""  # empty: SQLite file in data_dir
    store: Literal["sql", "memory", "kube"] = "sql"

    # --- tenancy and quota defaults ---------------------------------------------------
    default_namespace: str = Field(
        "", validation_alias=AliasChoices("CATALYST_SANDBOX_DEFAULT_NAMESPACE")
    )
    default_quota_cpu: str = "4"
    default_quota_memory: str = "8Gi"
    default_quota_storage: str = "50Gi"
    default_quota_sessions: int = Field(3, ge=1, le=10)

    # --- agents -----------------------------------------------------------------------
    agents_path: str = Field(
        "/etc/openova/sandbox-agents.json",
        validation_alias=AliasChoices("OPENOVA_SANDBOX_AGENTS_PATH"),
    )
    # the agents the sessions API offers (comma list; empty: every catalogue agent)
    agents: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("SANDBOX_AGENTS", "agents")
    )
    # Kubernetes mode: the agents the sandbox image carries (comma or space list, as the
    # image's AGENTS build argument); create refuses the others with agent-not-installed.
    # Empty: installation is not checked there.
    image_agents: Annotated[tuple[str, ...], NoDecode] = ()
    ring_buffer_bytes: int = RING_DEFAULT
    # lines of scrollback each terminal's server-side screen keeps (sent on attach/resync)
    screen_scrollback_lines: int = Field(1000, ge=0, le=100_000)
    # sandbox.v2: how far (bytes) a viewer may be past its last ack before it gets a
    # snapshot instead of a queue (SANDBOX_VIEWER_WINDOW_BYTES; docs/terminal.md)
    viewer_window_bytes: int = Field(1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    # a URL that gets every terminal's busy/waiting/idle transition as a JSON POST
    # (SANDBOX_NOTIFY_WEBHOOK; empty: off; docs/activity.md). It may hold a secret
    # (userinfo, a token in the query): never logged, never shown in repr.
    notify_webhook: str = Field("", repr=False)
    git_base_url: str = ""
    llm_gateway_url: str = Field("", validation_alias=AliasChoices("LLM_GATEWAY_URL"))
    openai_base_url: str = Field("", validation_alias=AliasChoices("OPENAI_BASE_URL"))
    openai_api_key: str = Field("", validation_alias=AliasChoices("OPENAI_API_KEY"), repr=False)

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

    # --- model gateway upstreams (docs/gateway.md): SANDBOX_LLM_CONFIG names the
    # operator's YAML/JSON file; without it OPENAI_* above and ANTHROPIC_* are the zero
    # config (one pass-through provider each)
    llm_config: str = ""
    # the model gateway a standalone `sandbox pty-server` gives its terminals (its root,
    # without /llm; Kubernetes: the operator renders the gateway Service's URL) and the
    # sandbox's own gateway token for it (docs/gateway.md, "Per-sandbox credentials")
    model_gateway_url: str = ""
    model_gateway_token: str = Field("", repr=False)
    anthropic_base_url: str = Field("", validation_alias=AliasChoices("ANTHROPIC_BASE_URL"))
    anthropic_api_key: str = Field(
        "", validation_alias=AliasChoices("ANTHROPIC_API_KEY"), repr=False
    )

    # --- terminal server (standalone `sandbox pty-server`: one per Sandbox in Kubernetes) ---
    pty_sandbox_id: str = Field("", validation_alias=AliasChoices("SANDBOX_ID", "pty_sandbox_id"))
    pty_namespace: str = Field(
        "", validation_alias=AliasChoices("SANDBOX_NAMESPACE", "pty_namespace")
    )
    pty_owner_email: str = Field(
        "", validation_alias=AliasChoices("SANDBOX_OWNER_EMAIL", "pty_owner_email")
    )
    pty_org_id: str = Field("", validation_alias=AliasChoices("SANDBOX_ORG_ID", "pty_org_id"))
    # the owner's token subject: when set, ownership is by subject, not by email
    pty_owner_sub: str = Field(
        "", validation_alias=AliasChoices("SANDBOX_OWNER_SUB", "pty_owner_sub")
    )
    pty_default_agent: str = Field(
        "", validation_alias=AliasChoices("SANDBOX_DEFAULT_AGENT", "pty_default_agent")
    )
    pty_session_limit: int = Field(
        3, ge=1, le=10, validation_alias=AliasChoices("SANDBOX_SESSION_LIMIT", "pty_session_limit")
    )
    pty_workdir: str = Field("", validation_alias=AliasChoices("SANDBOX_WORKDIR", "pty_workdir"))
    # opens /idle only: the operator probes idleness with it (from the pty-probe Secret)
    probe_token: str = Field("", repr=False)
    # the pod's share grant key (from its sandbox-share-grant Secret): it admits the
    # viewers of share links the control plane vouches for (docs/shares.md); empty: none
    share_grant_key: str = Field("", repr=False)

    # --- Kubernetes mode (operator rendering; env SANDBOX_KUBE_*) -----------------------
    kube_image: str = "ghcr.io/openova/sandbox:latest"
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
    # the API's and the operator's shared secret from which each sandbox's share grant
    # key is derived (Secret sandbox-share-grant; docs/kubernetes.md); empty: share
    # links are refused in Kubernetes mode
    share_grant_secret: str = Field("", repr=False)

    # --- auth -------------------------------------------------------------------------
    oidc_issuer: str = ""
    oidc_audience: str = ""
    jwks_url: str = ""
    cookie_secret: str = Field("", repr=False)
    public_url: str = ""  # how browsers reach us; WebSocket Origin is checked against it

    # --- BYOS (Claude Code) -------------------------------------------------------------
    byos_claude_code_enabled: str = ""
    byos_claude_code_client_id: str = ""
    byos_claude_code_authz_url: str = ""
    byos_claude_code_token_url: str = ""
    # RFC 7009 revocation endpoint; empty: the provider has none, disconnect only forgets
    byos_claude_code_revoke_url: str = ""
    byos_claude_code_callback_path: str = "/api/v1/sandbox/byos/claude-code/callback"
    byos_claude_code_scopes: Annotated[tuple[str, ...], NoDecode] = (
        "read:user",
        "write:claude-code",
    )

    # --- logging ----------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool | None = None  # None: JSON when stderr is not a TTY

    @field_validator("budget_org_usd", "budget_user_usd", "budget_sandbox_usd", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Decimal | None:
        """``""`` → no cap; else a non-negative amount in USD."""
        try:
            return parse_budget(value)
        except Invalid as exc:
            raise ValueError(exc.detail) from exc

    @field_validator("default_quota_cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        if not _CPU.match(value):
            raise ValueError(f"{value!r} is not a CPU quantity like 4, 0.5 or 500m")
        return value

    @field_validator(
        "default_quota_memory", "default_quota_storage", "kube_repo_storage", "kube_home_storage"
    )
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a quantity like 8Gi or 512Mi")
        return value

    @field_validator("ring_buffer_bytes", mode="before")
    @classmethod
    def _ring(cls, value: Any) -> int:
        try:
            return clamp_ring_bytes(int(value))
        except (TypeError, ValueError):
            return RING_DEFAULT

    @field_validator("image_agents", mode="before")
    @classmethod
    def _word_list(cls, value: Any) -> tuple[str, ...]:
        """``"aider opencode"`` or ``"aider,opencode"`` → ``("aider", "opencode")``."""
        if isinstance(value, str):
            return tuple(s for s in re.split(r"[\s,]+", value) if s)
        return tuple(value)

    @field_validator("byos_claude_code_scopes", "agents", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> tuple[str, ...]:
        """``"a, b,"`` from the environment → ``("a", "b")``."""
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        return tuple(value)

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


def _env_name(field_name: str) -> str:
    info = Settings.model_fields.get(field_name)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"SANDBOX_{field_name.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (plus explicit overrides from CLI flags).

    Raises :class:`Invalid` naming the environment variable on a bad value.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{_env_name(loc)}: {err['msg']}")
        raise Invalid("invalid settings: " + "; ".join(problems), code="invalid-settings") from exc
