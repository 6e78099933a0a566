"""Wire schemas, for the OpenAPI document and response validation.

Bodies are parsed by hand in the routes (the spec fixes the order of checks and the
error codes, which a generic 422 cannot express); these models describe the shapes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    error: str
    detail: str | None = None


class Unauthenticated(BaseModel):
    error: str = Field(examples=["unauthenticated"])


class Preview(BaseModel):
    prNumber: int
    url: str
    sha: str | None = None


class ConditionOut(BaseModel):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: str | None = None


class Usage30d(BaseModel):
    inputTokens: int
    outputTokens: int
    costUsd: float


class SandboxItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    agent: str
    status: str = Field(
        pattern="^(pending|running|stopped|failed|unknown|stopping)$",
        description="`stopping` while the sandbox is being deleted (deletionTimestamp set)",
    )
    createdAt: str
    repo: str
    deletionTimestamp: str | None = Field(
        None, description="when deletion was requested; present only while it is under way"
    )
    phase: str | None = None
    sessions: int
    storageUsed: str | None = None
    spend30d: str | None = Field(None, description="model spend of the last 30 days: USD 4.20")
    usage30d: Usage30d | None = Field(None, description="model usage of the last 30 days")
    previews: list[Preview]
    conditions: list[ConditionOut]
    attachUrl: str
    activity: str | None = Field(
        None,
        pattern="^(busy|waiting|idle)$",
        description="the primary terminal's agent: working, waiting for input, or idle "
        "(embedded mode, while it runs; docs/activity.md)",
    )


class SandboxList(BaseModel):
    sandboxes: list[SandboxItem]


class CreateBody(BaseModel):
    agent: str
    name: str | None = None
    repo: str | None = None


# --- agents and their installs (api/routes/agents.py) ---------------------------------
class AgentInstallOut(BaseModel):
    state: str = Field(pattern="^(running|succeeded|failed)$")
    log: list[str]
    error: str | None = None


class AgentOut(BaseModel):
    id: str
    label: str
    blurb: str
    installed: bool
    installHint: str
    byos: bool
    kind: str = Field(pattern="^(agent|shell)$")
    version: str | None = None
    source: str = Field(pattern="^(builtin|override|managed)$")
    path: str | None = None
    missing: list[str]
    installable: bool
    manualInstall: str | None = None
    canInstall: bool
    install: AgentInstallOut | None = None


class AgentList(BaseModel):
    agents: list[AgentOut]


class AgentInstallBody(BaseModel):
    version: str | None = Field(None, description="a version to install instead of the pin")


class AgentInstallStarted(BaseModel):
    slug: str
    state: str = Field(pattern="^running$")


class AgentInstallProgress(BaseModel):
    slug: str
    state: str = Field(pattern="^(idle|running|succeeded|failed)$")
    log: list[str]
    error: str | None = None
    version: str | None = None


class Isolation(BaseModel):
    """What keeps this server's terminals apart (embedded mode; docs/architecture.md)."""

    # bwrap: each sandbox in a bubblewrap view of its own; none: as the server's user
    mode: Literal["bwrap", "none"]
    reason: str | None = None  # why none
    network: bool | None = None  # the network inside (an offline org has loopback only)
    processLimit: int | None = None  # processes per sandbox; null: not enforced
    memoryLimit: str | None = None
    cpuLimit: str | None = None  # null: not enforced
    notIsolated: list[str]  # what is still shared


class WhoAmI(BaseModel):
    sub: str
    email: str
    org: str
    orgAdmin: bool
    isolation: Isolation | None = None  # embedded mode only


class AuthConfig(BaseModel):
    # true when the console can sign in with the issuer (issuer and client configured)
    oidcConfigured: bool
    issuer: str
    signInUrl: str | None = None  # where the console's Sign in button goes
    cliClientId: str | None = None  # the client `sandbox login` uses at the issuer
    scopes: str | None = None


class LogoutOut(BaseModel):
    logoutUrl: str  # the identity provider's end-session URL (RP-initiated logout)


class LoginLinkBody(BaseModel):
    next: str | None = Field(
        None, description="console path to land on (/sandbox or /sandbox/...), same site"
    )


class LoginLinkOut(BaseModel):
    url: str = Field(description="<public URL>/login?token=...; one use, 10 minutes")
    expiresAt: str
    qrSvg: str = Field(description="the URL as a QR code, a standalone SVG document")


class ResizeBody(BaseModel):
    rows: int = Field(ge=1, le=1000)
    cols: int = Field(ge=1, le=1000)


class SignalBody(BaseModel):
    signal: str


class TerminalCreate(BaseModel):
    agent: str


class TerminalOut(BaseModel):
    id: str
    agent: str
    attachUrl: str


# --- model usage and budgets (api/routes/usage.py) ------------------------------------
class UsageTotalsOut(BaseModel):
    requests: int
    inputTokens: int
    outputTokens: int
    cacheReadTokens: int
    cacheWriteTokens: int
    costUsd: float


class UsageDayOut(UsageTotalsOut):
    date: str = Field(description="YYYY-MM-DD (UTC)")


class UsageGroupOut(UsageTotalsOut):
    key: str = Field(description="the sandbox id, the user's email or the model")


class UsageReportOut(BaseModel):
    scope: str = Field(pattern="^(own|org)$")
    org: str
    groupBy: str | None = Field(None, pattern="^(sandbox|user|model)$")
    since: str
    until: str
    currency: str = Field(pattern="^USD$")
    totals: UsageTotalsOut
    days: list[UsageDayOut] = Field(description="every day of the window, oldest first")
    groups: list[UsageGroupOut] = Field(description="with groupBy: by cost, highest first")


class BudgetBody(BaseModel):
    monthlyUsd: float | str | None = Field(
        description="the monthly budget in USD (number or numeric string); null: no cap"
    )


class BudgetOut(BaseModel):
    scope: str = Field(pattern="^(org|user|sandbox)$")
    name: str
    monthlyUsd: float | None = Field(description="null: no cap")
    source: str = Field(pattern="^(default|set)$")
    month: str = Field(description="YYYY-MM (UTC)")
    spentUsd: float
    reservedUsd: float = Field(description="held by requests in flight")
    remainingUsd: float | None
    updatedAt: str | None = None
    updatedBy: str | None = None


class BudgetDefaultsOut(BaseModel):
    org: float | None
    user: float | None
    sandbox: float | None


class BudgetList(BaseModel):
    month: str
    currency: str = Field(pattern="^USD$")
    defaults: BudgetDefaultsOut
    budgets: list[BudgetOut]


# --- share links (api/routes/shares.py, docs/shares.md) -------------------------------
class ShareCreateBody(BaseModel):
    mode: str = Field("read", pattern="^(read|write)$", description="write: the link may type")
    ttlSeconds: int = Field(3600, ge=60, le=604800, description="lifetime, 1 minute to 7 days")


class ShareOut(BaseModel):
    id: str
    mode: str = Field(pattern="^(read|write)$")
    expiresAt: str
    createdAt: str
    createdBy: str = Field(description="email (else subject) of who created it")


class ShareCreated(ShareOut):
    token: str = Field(description="the link's secret; shown once, never listed again")
    url: str = Field(description="<public URL>/sandbox/<id>?share=<token>")


class ShareList(BaseModel):
    shares: list[ShareOut]


class SharedSandbox(BaseModel):
    id: str
    name: str
    agent: str
    owner: str = Field(description="the owner's email")
    mode: str = Field(pattern="^(read|write)$")
    expiresAt: str
