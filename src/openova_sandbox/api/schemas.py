"""Wire schemas, for the OpenAPI document and response validation.

Bodies are parsed by hand in the routes (the spec fixes the order of checks and the
error codes, which a generic 422 cannot express); these models describe the shapes.
"""

from __future__ import annotations

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


class SandboxItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    agent: str
    status: str = Field(pattern="^(pending|running|stopped|failed|unknown)$")
    createdAt: str
    repo: str
    phase: str | None = None
    sessions: int
    storageUsed: str | None = None
    spend30d: str | None = None
    previews: list[Preview]
    conditions: list[ConditionOut]
    attachUrl: str


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


class WhoAmI(BaseModel):
    sub: str
    email: str
    org: str
    orgAdmin: bool


class AuthConfig(BaseModel):
    oidcConfigured: bool
    issuer: str


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
