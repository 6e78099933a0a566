"""The model gateway's flow: authenticate → resolve the model → reserve the worst case →
forward → settle the real cost.

A sandbox's agent presents its gateway token (never a provider key); the ledger says whom
it speaks for. The model it asks for resolves through the operator config to a provider
and the upstream's model name. Before anything is forwarded the request's worst case is
reserved against the org's, the user's and the sandbox's monthly budgets (a refusal is
``BudgetExceeded``, a 429); the answer is then passed back chunk by chunk while its
usage is read from it, and :meth:`Exchange.finish` settles the reservation to the real
cost and writes the usage record, also when the request failed or the caller left.

The worst case: every input token at the dearest input price, with the input counted as
one token per ``RESERVE_BYTES_PER_TOKEN`` bytes of the request (text tokenises to 3 to 4
bytes a token and JSON escaping only adds bytes, so this stays above the real count), plus
the request's own output limit (``max_tokens`` and its kin) or else the model's
``maxOutputTokens`` at the output price. A reservation that turns out too small still
settles to the real cost.

Prompts, completions and keys are never logged: the log line of a request names the
model, provider, status, token counts, cost and timings only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import structlog

from ..domain.errors import Invalid, NotFound, Unauthenticated
from ..domain.model import utcnow
from ..events.product import Emitter, usage_recorded
from ..gateway.config import GatewayConfig, Kind, ModelRoute, Provider, worst_case_cost
from ..gateway.metrics import OTHER, GatewayMetrics
from ..gateway.upstream import Upstream, UpstreamError, UpstreamResponse
from ..gateway.usage import MAX_BODY_BYTES, Api, StreamMeter, Usage, usage_from_body
from .gateway_ledger import GatewayIdentity, GatewayLedger, UsageRecord

log = structlog.get_logger("openova_sandbox.gateway")

RESERVE_BYTES_PER_TOKEN = 2  # the worst case's input count (see the module doc)
ESTIMATE_BYTES_PER_TOKEN = 4  # an estimate when the upstream told no usage
ANTHROPIC_VERSION = "2023-06-01"  # sent when the caller sends none
MODELS_TIMEOUT_SECONDS = 10.0

# request headers passed on; everything else stays here: the caller's credentials and
# cookies, hop-by-hop headers, OpenAI's organization/project selectors (which would let a
# sandbox pick another project the operator's key can reach)
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "content-type",
        "accept",
        "user-agent",
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "idempotency-key",
    }
)
FORWARDED_REQUEST_PREFIXES = ("x-stainless-",)
# response headers not passed back: hop-by-hop, cookies of the provider's edge, the
# operator's account names, and the ones the server sets itself (date, server)
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"set-cookie",
        b"date",
        b"server",
        b"openai-organization",
        b"openai-project",
    }
)
# the server's own request id takes x-request-id; the upstream's is renamed
UPSTREAM_REQUEST_ID = b"x-upstream-request-id"


@dataclass(frozen=True)
class Endpoint:
    """One gateway route: the protocol, what it meters (None: nothing, e.g. counting
    tokens) and the path after the provider's base URL."""

    kind: Kind
    api: Api | None
    path: str


OPENAI_CHAT = Endpoint("openai", "openai-chat", "/chat/completions")
OPENAI_RESPONSES = Endpoint("openai", "openai-responses", "/responses")
ANTHROPIC_MESSAGES = Endpoint("anthropic", "anthropic-messages", "/v1/messages")
ANTHROPIC_COUNT_TOKENS = Endpoint("anthropic", None, "/v1/messages/count_tokens")

_OUTPUT_LIMIT_FIELDS: dict[str, tuple[str, ...]] = {
    "openai-chat": ("max_completion_tokens", "max_tokens"),
    "openai-responses": ("max_output_tokens",),
    "anthropic-messages": ("max_tokens",),
}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def upstream_headers(provider: Provider, caller: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers sent upstream: the caller's harmless ones and the provider's key."""
    out = [
        (name, value)
        for name, value in caller.items()
        if name in FORWARDED_REQUEST_HEADERS or name.startswith(FORWARDED_REQUEST_PREFIXES)
    ]
    out.append(("accept-encoding", "identity"))  # the meter reads the bytes as they pass
    if provider.kind == "anthropic":
        if "anthropic-version" not in caller:
            out.append(("anthropic-version", ANTHROPIC_VERSION))
        if provider.api_key:
            out.append(("x-api-key", provider.api_key))
    elif provider.api_key:
        out.append(("authorization", f"Bearer {provider.api_key}"))
    return out


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in raw:
        if name in DROPPED_RESPONSE_HEADERS:
            continue
        if name == b"x-request-id":
            out.append((UPSTREAM_REQUEST_ID, value))
        else:
            out.append((name, value))
    return out


@dataclass(frozen=True)
class Prepared:
    """A checked request: its route, the bytes to send and its worst-case output."""

    route: ModelRoute
    body: bytes
    stream: bool
    output_limit: int


def prepare(endpoint: Endpoint, route_for: Callable[[str], ModelRoute], body: bytes) -> Prepared:
    """Check what the gateway reads of a request (it must be a JSON object with a model;
    ``stream`` and the output limit, when present, must be of the right type) and make
    the bytes to forward: the original ones, unless the model is an alias (the upstream's
    name is put in) or an OpenAI chat stream does not ask for its usage (the gateway asks
    for it: ``stream_options.include_usage``). Every other field passes untouched."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the request body is not valid JSON", code="invalid-json") from None
    if not isinstance(parsed, dict):
        raise Invalid("the request body must be a JSON object", code="invalid-json")
    model = parsed.get("model")
    if not isinstance(model, str) or not model.strip():
        raise Invalid("model: a model name is required", code="invalid-model")
    route = route_for(model)
    stream = parsed.get("stream", False)
    if not isinstance(stream, bool):
        raise Invalid("stream: must be true or false", code="invalid-stream")
    output_limit = route.max_output_tokens
    for name in _OUTPUT_LIMIT_FIELDS.get(endpoint.api or "", ()):
        value = parsed.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise Invalid(f"{name}: must be a whole number of at least 1", code="invalid-limit")
        output_limit = value
        break
    rewrite = route.model != model
    if rewrite:
        parsed["model"] = route.model
    if endpoint.api == "openai-chat" and stream:
        options = parsed.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise Invalid("stream_options: must be an object", code="invalid-stream-options")
        if not (options or {}).get("include_usage"):
            parsed["stream_options"] = {**(options or {}), "include_usage": True}
            rewrite = True
    if rewrite:
        body = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()
    return Prepared(route=route, body=body, stream=stream, output_limit=output_limit)


class GatewayService:
    """The gateway; :meth:`start`/:meth:`stop` open and close the upstream pool."""

    def __init__(
        self,
        config: GatewayConfig,
        ledger: GatewayLedger,
        *,
        upstream: Upstream | None = None,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.upstream = upstream or Upstream(config.timeouts)
        self.metrics = metrics
        self._clock = clock
        # usage.recorded after every settle (events.product); None: not published
        self.events: Emitter | None = None

    @property
    def max_request_bytes(self) -> int:
        return self.config.max_request_bytes

    async def start(self) -> None:
        await self.upstream.start()

    async def stop(self) -> None:
        await self.upstream.stop()

    async def authenticate(self, token: str | None) -> GatewayIdentity:
        if not token:
            raise Unauthenticated(
                "a gateway token is required (Authorization: Bearer <token> or x-api-key)"
            )
        identity = await self.ledger.authenticate(token)
        if identity is None:
            raise Unauthenticated("the gateway token is unknown or revoked")
        return identity

    def route(self, kind: Kind, model: str) -> ModelRoute:
        route = self.config.resolve(kind, model)
        if route is not None:
            return route
        if not self.config.providers:
            raise NotFound(
                f"model {model!r}: no model provider is configured on this server "
                "(SANDBOX_LLM_CONFIG, or OPENAI_API_KEY / ANTHROPIC_API_KEY)",
                code="model-not-found",
            )
        served = ", ".join(r.alias for r in self.config.aliases(kind)) or "none"
        raise NotFound(
            f"model {model!r} is not served on the {'OpenAI' if kind == 'openai' else 'Anthropic'}"
            f" API here (models: {served})",
            code="model-not-found",
        )

    async def open(
        self,
        endpoint: Endpoint,
        identity: GatewayIdentity,
        body: bytes,
        headers: Mapping[str, str],
    ) -> Exchange:
        """Check, reserve and send; the returned exchange has the upstream's status and
        headers, and is to be read and then finished (which settles). Raises Invalid,
        NotFound, BudgetExceeded, UpstreamError (reservation settled at 0)."""
        started = time.perf_counter()
        started_at = self._clock()
        prepared = prepare(endpoint, lambda name: self.route(endpoint.kind, name), body)
        route = prepared.route
        reservation: str | None = None
        if endpoint.api is not None:
            worst = worst_case_cost(
                route,
                input_tokens=_ceil_div(len(body), RESERVE_BYTES_PER_TOKEN),
                output_tokens=prepared.output_limit,
            )
            reservation = await self.ledger.reserve(identity, worst)
        exchange = Exchange(
            service=self,
            endpoint=endpoint,
            identity=identity,
            prepared=prepared,
            request_bytes=len(body),
            reservation=reservation,
            started=started,
            started_at=started_at,
        )
        try:
            response = await self.upstream.open(
                "POST",
                route.provider.base_url + endpoint.path,
                headers=upstream_headers(route.provider, headers),
                content=prepared.body,
                what=f"provider {route.provider.name!r}",
            )
        except UpstreamError as exc:
            await exchange.fail(exc)
            raise
        except BaseException:
            await asyncio.shield(exchange.finish(status=0))
            raise
        exchange.attach(response)
        return exchange

    async def models(self, kind: Kind) -> dict[str, Any]:
        """``GET /models`` in OpenAI's shape: the configured aliases of ``kind``, plus
        what the pass-through provider lists (when it answers)."""
        data = [
            {"id": r.alias, "object": "model", "created": 0, "owned_by": r.provider.name}
            for r in self.config.aliases(kind)
        ]
        provider = self.config.passthrough(kind)
        if provider is not None:
            seen = {entry["id"] for entry in data}
            for entry in await self._upstream_models(provider):
                if entry["id"] not in seen:
                    seen.add(entry["id"])
                    data.append(entry)
        return {"object": "list", "data": data}

    async def _upstream_models(self, provider: Provider) -> list[dict[str, Any]]:
        path = "/models" if provider.kind == "openai" else "/v1/models"
        try:
            response = await self.upstream.client.get(
                provider.base_url + path,
                headers=upstream_headers(provider, {}),
                timeout=MODELS_TIMEOUT_SECONDS,
            )
            listed = response.json().get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.warning("llm_models_unavailable", provider=provider.name, error=type(exc).__name__)
            return []
        if not isinstance(listed, list):
            return []
        return [
            {
                "id": item["id"],
                "object": "model",
                "created": item.get("created", 0),
                "owned_by": item.get("owned_by", provider.name),
            }
            for item in listed
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]

    # --- settling (called by Exchange) ---------------------------------------------

    async def _settle(self, exchange: Exchange, status: int, usage: Usage | None) -> None:
        route = exchange.prepared.route
        price = route.price
        cost = (
            price.cost(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
            if usage is not None
            else Decimal(0)
        )
        latency_ms = (time.perf_counter() - exchange.started) * 1000
        api = exchange.endpoint.api
        label = route.alias if route.configured or 0 < status < 400 else OTHER
        if self.metrics is not None and api is not None:
            first_byte = exchange.first_byte_ms
            self.metrics.record(
                model=label,
                api=api,
                status=status,
                usage=usage,
                cost=cost,
                first_byte_s=None if first_byte is None else first_byte / 1000,
            )
        u = usage or Usage()
        # one line a request: numbers and short names only (the redactor's fast path);
        # token counts under names without "token" (the redactor masks those keys)
        log.info(
            "llm_request",
            model=route.alias,
            api=api or exchange.endpoint.path,
            status=status,
            stream=exchange.prepared.stream,
            input=u.input_tokens,
            output=u.output_tokens,
            cache_read=u.cache_read_tokens,
            cache_write=u.cache_write_tokens,
            usage_estimated=u.estimated,
            cost_usd=float(cost),
            latency_ms=round(latency_ms, 2),
            first_byte_ms=exchange.first_byte_ms,
            outcome=exchange.outcome,
            sandbox=exchange.identity.sandbox,
            upstream_request_id=exchange.upstream_request_id,
        )
        if exchange.reservation is None or api is None:
            return  # nothing reserved: a call that costs nothing (counting tokens)
        record = UsageRecord(
            identity=exchange.identity,
            model=route.alias,
            provider=route.provider.name,
            api=api,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            cost_usd=cost,
            latency_ms=latency_ms,
            status=status,
            stream=exchange.prepared.stream,
            started_at=exchange.started_at,
        )
        try:
            await self.ledger.settle(exchange.reservation, record)
            if self.events is not None:
                self.events.emit(
                    usage_recorded(
                        exchange.identity,
                        model=route.alias,
                        input_tokens=u.input_tokens,
                        output_tokens=u.output_tokens,
                        cost_usd=cost,
                        status=status,
                    )
                )
        except Exception as exc:
            # the reservation expires in the ledger; the record is lost: say so loudly
            log.error(
                "llm_settle_failed",
                sandbox=exchange.identity.sandbox,
                model=route.alias,
                cost_usd=str(cost),
                error=type(exc).__name__,
            )


class Exchange:
    """One forwarded request: read :meth:`chunks`, then :meth:`finish` (exactly what
    the caller was sent gets metered)."""

    def __init__(
        self,
        *,
        service: GatewayService,
        endpoint: Endpoint,
        identity: GatewayIdentity,
        prepared: Prepared,
        request_bytes: int,
        reservation: str | None,
        started: float,
        started_at: datetime,
    ) -> None:
        self._service = service
        self.endpoint = endpoint
        self.identity = identity
        self.prepared = prepared
        self.request_bytes = request_bytes
        self.reservation = reservation
        self.started = started
        self.started_at = started_at
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.first_byte_ms: float | None = None
        self.outcome = "pending"
        self.upstream_request_id = ""
        self._response: UpstreamResponse | None = None
        self._meter: StreamMeter | None = None
        self._body: bytearray | None = None
        self._received = 0
        self._ended = False  # the upstream's body was read to its end
        self._finished = False

    def attach(self, response: UpstreamResponse) -> None:
        self._response = response
        self.status = response.status
        self.first_byte_ms = round((time.perf_counter() - self.started) * 1000, 2)
        self.headers = response_headers(response.headers)
        for name, value in response.headers:
            if name in (b"x-request-id", b"request-id"):
                self.upstream_request_id = value.decode("latin-1")[:128]
        api = self.endpoint.api
        if api is None or not 200 <= response.status < 300:
            return
        content_type = next((v for k, v in response.headers if k == b"content-type"), b"")
        if content_type.startswith(b"text/event-stream"):
            self._meter = StreamMeter(api)
        else:
            self._body = bytearray()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The upstream's body, chunk by chunk as it arrives. Raises UpstreamError when
        the upstream breaks off or stalls past the read timeout."""
        assert self._response is not None
        meter, body = self._meter, self._body
        async for chunk in self._response.chunks():
            self._received += len(chunk)
            if meter is not None:
                meter.feed(chunk)
            elif body is not None:
                if len(body) + len(chunk) <= MAX_BODY_BYTES:
                    body += chunk
                else:
                    self._body = body = None
            yield chunk
        self._ended = True

    async def fail(self, exc: UpstreamError) -> None:
        """The upstream could not be reached or answer: settle at nothing."""
        self.outcome = exc.code
        await asyncio.shield(self.finish(status=exc.status))

    async def finish(self, *, status: int | None = None, outcome: str | None = None) -> None:
        """Close the upstream (cancelling it if unread), settle and record; idempotent.
        ``status``: what the caller got, when not the upstream's."""
        if self._finished:
            return
        self._finished = True
        if outcome is not None:
            self.outcome = outcome
        elif self.outcome == "pending":
            self.outcome = "complete" if self._ended else "incomplete"
        if self._response is not None:
            try:
                await self._response.aclose()
            except Exception as exc:  # closing a broken connection may raise; never mind
                log.debug("llm_upstream_close_failed", error=type(exc).__name__)
        await self._service._settle(self, self.status if status is None else status, self.usage())

    @property
    def streaming(self) -> bool:
        """Whether the answer is a server-sent event stream being metered."""
        return self._meter is not None

    def usage(self) -> Usage | None:
        """What the upstream said was used; estimated when it did not say (a stream cut
        short, an upstream that reports no usage). An error answer used nothing."""
        if self.endpoint.api is None or not 200 <= self.status < 300:
            return None
        if self._meter is not None:
            self._meter.finish()
            told = self._meter.usage()
            if told is not None and self._meter.input_known:
                return told
            return Usage(
                input_tokens=self._input_estimate(),
                output_tokens=told.output_tokens if told else 0,
                estimated=True,
            )
        if self._body is not None and self._ended:
            found = usage_from_body(self.endpoint.api, bytes(self._body))
            if found is not None:
                return found
        return self._estimate(self._received)

    def _input_estimate(self) -> int:
        return _ceil_div(self.request_bytes, ESTIMATE_BYTES_PER_TOKEN)

    def _estimate(self, output_bytes: int) -> Usage:
        return Usage(
            input_tokens=self._input_estimate(),
            output_tokens=_ceil_div(output_bytes, ESTIMATE_BYTES_PER_TOKEN),
            estimated=True,
        )
