"""The model gateway's operator config: upstream providers, model aliases and prices.

``SANDBOX_LLM_CONFIG`` names a YAML or JSON file (JSON is YAML, so one parser reads
both)::

    providers:
      openai:                       # a name of the operator's choosing
        kind: openai                # openai | anthropic: the wire protocol it speaks
        baseUrl: https://api.openai.com/v1
        apiKeyEnv: OPENAI_API_KEY   # or apiKeyFile: /run/secrets/openai (or neither)
        passthrough: true           # model names not listed below go here unchanged
      anthropic:
        kind: anthropic
        baseUrl: https://api.anthropic.com
        apiKeyFile: /run/secrets/anthropic-key
    models:
      gpt-4.1-mini:                 # the name agents ask for
        provider: openai
        model: gpt-4.1-mini         # the upstream's name (default: the alias)
        maxOutputTokens: 32768      # the worst case when a request sets no max_tokens
        price: {input: 0.40, output: 1.60, cacheRead: 0.10}   # USD per million tokens
    defaultPrice: {input: 1, output: 4}   # for pass-through models (default: free)
    timeouts: {connect: 10, read: 600}    # seconds
    maxRequestBytes: 33554432

Without the file the server's own ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` and
``ANTHROPIC_BASE_URL``/``ANTHROPIC_API_KEY`` make one pass-through provider each (no
prices: usage is metered in tokens, cost 0). Every problem is an :class:`LlmConfigError`
naming the file and the field, which stops the server at start.

Base URLs follow each SDK's convention: an OpenAI base URL includes ``/v1`` (requests go
to ``{baseUrl}/chat/completions``), an Anthropic one does not (``{baseUrl}/v1/messages``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from ..domain.errors import Invalid

Kind = Literal["openai", "anthropic"]
KINDS: tuple[Kind, ...] = ("openai", "anthropic")
MILLION = Decimal(1_000_000)
DEFAULT_MAX_OUTPUT_TOKENS = 32_768
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_BASE_URLS: dict[Kind, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class LlmConfigError(Invalid):
    """``SANDBOX_LLM_CONFIG`` (or the zero-config environment) cannot be used."""

    code = "invalid-llm-config"


@dataclass(frozen=True)
class Price:
    """USD per million tokens of each kind."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)

    @property
    def free(self) -> bool:
        return not (self.input or self.output or self.cache_read or self.cache_write)

    def cost(
        self,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal:
        total = (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_tokens * self.cache_read
            + cache_write_tokens * self.cache_write
        )
        return total / MILLION

    @property
    def dearest_input(self) -> Decimal:
        """The highest price an input token can be billed at (uncached, cache write)."""
        return max(self.input, self.cache_write, self.cache_read)


@dataclass(frozen=True)
class Provider:
    name: str
    kind: Kind
    base_url: str  # without a trailing slash
    api_key: str = field(default="", repr=False)
    passthrough: bool = False


@dataclass(frozen=True)
class ModelRoute:
    """Where a model name a caller asks for goes, and what it costs."""

    alias: str
    provider: Provider
    model: str  # the upstream's name
    price: Price
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    configured: bool = True  # False: a pass-through name the config does not list


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 600.0  # between two reads: long generations stream slowly
    write: float = 60.0
    pool: float = 10.0


@dataclass(frozen=True)
class GatewayConfig:
    providers: Mapping[str, Provider]
    models: Mapping[str, ModelRoute]
    default_price: Price = Price()
    timeouts: Timeouts = Timeouts()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    source: str = ""  # the file, or "environment" for the zero config

    def resolve(self, kind: Kind, name: str) -> ModelRoute | None:
        """The route for ``name`` asked on the ``kind`` API: an alias whose provider
        speaks that protocol, else the pass-through provider of that kind, else None."""
        route = self.models.get(name)
        if route is not None:
            return route if route.provider.kind == kind else None
        for provider in self.providers.values():
            if provider.passthrough and provider.kind == kind:
                return ModelRoute(
                    alias=name,
                    provider=provider,
                    model=name,
                    price=self.default_price,
                    configured=False,
                )
        return None

    def aliases(self, kind: Kind) -> list[ModelRoute]:
        return [r for r in self.models.values() if r.provider.kind == kind]

    def passthrough(self, kind: Kind) -> Provider | None:
        return next((p for p in self.providers.values() if p.passthrough and p.kind == kind), None)


# ---------------------------------------------------------------------------- loading

SECTIONS = {"providers", "models", "defaultPrice", "timeouts", "maxRequestBytes"}
PROVIDER_FIELDS = {"kind", "baseUrl", "apiKeyEnv", "apiKeyFile", "passthrough"}
MODEL_FIELDS = {"provider", "model", "maxOutputTokens", "price"}
PRICE_FIELDS = {
    "input": "input",
    "output": "output",
    "cacheRead": "cache_read",
    "cacheWrite": "cache_write",
}
TIMEOUT_FIELDS = {"connect", "read", "write", "pool"}


class _Reader:
    """Field access that names the file and the dotted field in every error."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    def fail(self, where: str, problem: str) -> LlmConfigError:
        return LlmConfigError(f"SANDBOX_LLM_CONFIG {self.source}: {where}: {problem}")

    def mapping(self, raw: Any, where: str) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
            raise self.fail(where, "must be a mapping of names to values")
        return raw

    def only(self, raw: dict[str, Any], allowed: set[str] | Mapping[str, str], where: str) -> None:
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            known = ", ".join(sorted(allowed))
            raise self.fail(
                f"{where}.{unknown[0]}" if where else unknown[0], f"unknown field (known: {known})"
            )

    def string(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise self.fail(where, "must be a non-empty string")
        return raw.strip()

    def number(self, raw: Any, where: str, *, positive: bool = False) -> Decimal:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise self.fail(where, "must be a number")
        try:
            value = Decimal(str(raw).strip())
        except InvalidOperation:
            raise self.fail(where, f"{raw!r} is not a number") from None
        if not value.is_finite() or value < 0 or (positive and value == 0):
            raise self.fail(where, "must be a positive number" if positive else "must be ≥ 0")
        return value

    def integer(self, raw: Any, where: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise self.fail(where, "must be a whole number ≥ 1")
        return raw

    def price(self, raw: Any, where: str) -> Price:
        data = self.mapping(raw, where)
        self.only(data, PRICE_FIELDS, where)
        values = {PRICE_FIELDS[k]: self.number(v, f"{where}.{k}") for k, v in data.items()}
        base = values.get("input", Decimal(0))
        # unset cache prices default to the input price: never cheaper than it may be
        values.setdefault("cache_read", base)
        values.setdefault("cache_write", base)
        return Price(**values)

    def url(self, raw: Any, where: str) -> str:
        text = self.string(raw, where).rstrip("/")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(where, f"{text!r} is not an http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise self.fail(where, "must not carry credentials, a query or a fragment")
        return text

    def api_key(self, data: dict[str, Any], where: str) -> str:
        if "apiKeyEnv" in data and "apiKeyFile" in data:
            raise self.fail(f"{where}.apiKeyFile", "set apiKeyEnv or apiKeyFile, not both")
        if "apiKeyEnv" in data:
            name = self.string(data["apiKeyEnv"], f"{where}.apiKeyEnv")
            value = self.env.get(name, "").strip()
            if not value:
                raise self.fail(f"{where}.apiKeyEnv", f"environment variable {name} is not set")
            return value
        if "apiKeyFile" in data:
            path = Path(self.string(data["apiKeyFile"], f"{where}.apiKeyFile"))
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                problem = getattr(exc, "strerror", None) or type(exc).__name__
                raise self.fail(f"{where}.apiKeyFile", f"cannot read {path}: {problem}") from None
            if not value:
                raise self.fail(f"{where}.apiKeyFile", f"{path} is empty")
            return value
        return ""  # a local server that takes no key


def parse_config(raw: Any, *, source: str, env: Mapping[str, str]) -> GatewayConfig:
    """A config from the parsed file (see the module doc); raises LlmConfigError."""
    r = _Reader(source, env)
    top = r.mapping(raw, "(top level)")
    r.only(top, SECTIONS, "")
    providers: dict[str, Provider] = {}
    for name, value in r.mapping(top.get("providers"), "providers").items():
        where = f"providers.{name}"
        data = r.mapping(value, where)
        r.only(data, PROVIDER_FIELDS, where)
        kind = data.get("kind")
        if kind not in KINDS:
            raise r.fail(f"{where}.kind", f"must be one of {', '.join(KINDS)}")
        passthrough = data.get("passthrough", False)
        if not isinstance(passthrough, bool):
            raise r.fail(f"{where}.passthrough", "must be true or false")
        providers[name] = Provider(
            name=name,
            kind=kind,
            base_url=r.url(data.get("baseUrl", DEFAULT_BASE_URLS[kind]), f"{where}.baseUrl"),
            api_key=r.api_key(data, where),
            passthrough=passthrough,
        )
    for kind in KINDS:
        several = [p.name for p in providers.values() if p.passthrough and p.kind == kind]
        if len(several) > 1:
            raise r.fail(
                f"providers.{several[1]}.passthrough",
                f"only one {kind} provider can take unlisted models ({', '.join(several)})",
            )
    models: dict[str, ModelRoute] = {}
    for alias, value in r.mapping(top.get("models"), "models").items():
        where = f"models.{alias}"
        data = r.mapping(value, where)
        r.only(data, MODEL_FIELDS, where)
        provider_name = r.string(data.get("provider"), f"{where}.provider")
        if provider_name not in providers:
            raise r.fail(
                f"{where}.provider",
                f"no provider {provider_name!r} (providers: {', '.join(providers) or 'none'})",
            )
        models[alias] = ModelRoute(
            alias=alias,
            provider=providers[provider_name],
            model=r.string(data.get("model", alias), f"{where}.model"),
            price=r.price(data.get("price"), f"{where}.price"),
            max_output_tokens=r.integer(
                data.get("maxOutputTokens", DEFAULT_MAX_OUTPUT_TOKENS), f"{where}.maxOutputTokens"
            ),
        )
    timeouts_raw = r.mapping(top.get("timeouts"), "timeouts")
    r.only(timeouts_raw, TIMEOUT_FIELDS, "timeouts")
    timeouts = Timeouts(
        **{k: float(r.number(v, f"timeouts.{k}", positive=True)) for k, v in timeouts_raw.items()}
    )
    max_bytes = r.integer(top.get("maxRequestBytes", DEFAULT_MAX_REQUEST_BYTES), "maxRequestBytes")
    return GatewayConfig(
        providers=providers,
        models=models,
        default_price=r.price(top.get("defaultPrice"), "defaultPrice"),
        timeouts=timeouts,
        max_request_bytes=max_bytes,
        source=source,
    )


def zero_config(
    *,
    openai_base_url: str = "",
    openai_api_key: str = "",
    anthropic_base_url: str = "",
    anthropic_api_key: str = "",
) -> GatewayConfig:
    """One pass-through provider per protocol the server's environment configures."""
    env = "environment"
    r = _Reader(env, {})
    providers: dict[str, Provider] = {}
    if openai_base_url or openai_api_key:
        providers["openai"] = Provider(
            name="openai",
            kind="openai",
            base_url=r.url(openai_base_url or DEFAULT_BASE_URLS["openai"], "OPENAI_BASE_URL"),
            api_key=openai_api_key.strip(),
            passthrough=True,
        )
    if anthropic_base_url or anthropic_api_key:
        providers["anthropic"] = Provider(
            name="anthropic",
            kind="anthropic",
            base_url=r.url(
                anthropic_base_url or DEFAULT_BASE_URLS["anthropic"], "ANTHROPIC_BASE_URL"
            ),
            api_key=anthropic_api_key.strip(),
            passthrough=True,
        )
    return GatewayConfig(providers=providers, models={}, source=env)


def load_config(
    path: str,
    *,
    env: Mapping[str, str],
    openai_base_url: str = "",
    openai_api_key: str = "",
    anthropic_base_url: str = "",
    anthropic_api_key: str = "",
) -> GatewayConfig:
    """The config file at ``path``; without one, :func:`zero_config`."""
    if not path.strip():
        return zero_config(
            openai_base_url=openai_base_url,
            openai_api_key=openai_api_key,
            anthropic_base_url=anthropic_base_url,
            anthropic_api_key=anthropic_api_key,
        )
    file = Path(path.strip())
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = getattr(exc, "strerror", None) or type(exc).__name__
        raise LlmConfigError(f"SANDBOX_LLM_CONFIG {file}: cannot read it: {problem}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise LlmConfigError(f"SANDBOX_LLM_CONFIG {file}: not valid YAML or JSON{at}") from None
    return parse_config(raw, source=str(file), env=env)


def worst_case_cost(route: ModelRoute, *, input_tokens: int, output_tokens: int) -> Decimal:
    """What a request can cost at most: every input token at the dearest input price,
    and the whole output allowance."""
    price = route.price
    return (input_tokens * price.dearest_input + output_tokens * price.output) / MILLION
