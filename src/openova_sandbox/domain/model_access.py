"""How a sandbox's agents reach models: the model gateway's URLs and the sandbox's own
gateway token, under the names each agent reads (docs/gateway.md, "Per-sandbox
credentials"). Pure: no I/O.

Every terminal of a sandbox gets the same variables, so the agent, the Shell and extra
terminals all speak for that sandbox:

- ``OPENAI_BASE_URL=<gateway>/llm/openai/v1`` and ``OPENAI_API_KEY=<token>``: the
  OpenAI SDKs' names, read by qwen-code, opencode (through its config file's
  ``{env:…}``), aider, and by a user's ``curl`` in the Shell;
- ``ANTHROPIC_BASE_URL=<gateway>/llm/anthropic`` and ``ANTHROPIC_AUTH_TOKEN=<token>``:
  claude-code's gateway settings (sent as ``Authorization: Bearer``, never the "use this
  API key?" dialog that ``ANTHROPIC_API_KEY`` gets); ``LLM_GATEWAY_URL`` is the same
  Anthropic-shaped URL, the name the claude-code row and older override rows read;
- ``SANDBOX_AGENT_MODEL``: the model the agents ask for (the rows hand it on).

A provider's key is never among them: the gateway swaps the token for the key upstream.
Each protocol's variables are given only when the gateway has a provider that speaks it,
so an agent whose models are not served is refused at create (``agent-not-configured``)
instead of starting and failing at its first request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GATEWAY_PREFIX = "/llm"
OPENAI_PATH = GATEWAY_PREFIX + "/openai/v1"  # the SDKs add /chat/completions, /responses
ANTHROPIC_PATH = GATEWAY_PREFIX + "/anthropic"  # the SDKs add /v1/messages

# the variables that carry the token (the rest are URLs and a model name)
TOKEN_VARS = ("OPENAI_API_KEY", "ANTHROPIC_AUTH_TOKEN")
# what create's checks and "could the agent start?" use where the real token is not
# issued yet (it is issued when a terminal of the sandbox starts)
PLACEHOLDER_TOKEN = "sandbox-gateway-token"  # a stand-in, not a secret
PLACEHOLDER_URL = "http://127.0.0.1"


@dataclass(frozen=True)
class ModelAccess:
    """The gateway as one sandbox sees it. ``gateway_url`` is the gateway's root
    (``http://127.0.0.1:8080``, without ``/llm``); empty: no gateway, no variables.
    ``token``: the sandbox's gateway token (empty: the URLs only)."""

    gateway_url: str = ""
    token: str = field(default="", repr=False)
    openai: bool = True
    anthropic: bool = True

    def env(self) -> dict[str, str]:
        root = self.gateway_url.rstrip("/")
        if not root:
            return {}
        out: dict[str, str] = {}
        if self.openai:
            out["OPENAI_BASE_URL"] = root + OPENAI_PATH
            if self.token:
                out["OPENAI_API_KEY"] = self.token
        if self.anthropic:
            out["ANTHROPIC_BASE_URL"] = root + ANTHROPIC_PATH
            out["LLM_GATEWAY_URL"] = root + ANTHROPIC_PATH
            if self.token:
                out["ANTHROPIC_AUTH_TOKEN"] = self.token
        return out


def agent_model_env(access: ModelAccess | None, agent_model: str) -> dict[str, str]:
    """What every terminal of a sandbox gets for models: the gateway's variables (none
    without a gateway) and the model name."""
    env = access.env() if access is not None else {}
    if agent_model:
        env["SANDBOX_AGENT_MODEL"] = agent_model
    return env


def loopback_url(host: str, port: int) -> str:
    """How a process on this machine reaches a server listening on ``host:port``: a
    wildcard address becomes the loopback address of its family (agents run on the
    server; ``SANDBOX_PUBLIC_URL`` is how browsers reach it, maybe through a proxy)."""
    host = host.strip()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"
