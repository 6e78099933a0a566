"""The gateway's operator config: what a good file gives, and how each bad one fails
(naming the file and the field), and the zero config from the server's environment."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from openova_sandbox.gateway.config import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    LlmConfigError,
    Price,
    load_config,
    parse_config,
    worst_case_cost,
    zero_config,
)

GOOD = """
providers:
  openai:
    kind: openai
    baseUrl: https://api.openai.com/v1/
    apiKeyEnv: MY_OPENAI_KEY
    passthrough: true
  claude:
    kind: anthropic
    apiKeyFile: {key_file}
  local:
    kind: openai
    baseUrl: http://127.0.0.1:11434/v1
models:
  gpt-4.1-mini:
    provider: openai
    maxOutputTokens: 32768
    price: {{input: 0.40, output: 1.60, cacheRead: "0.10"}}
  sonnet:
    provider: claude
    model: claude-sonnet-4-5
    price: {{input: 3, output: 15, cacheRead: 0.3, cacheWrite: 3.75}}
  qwen:
    provider: local
    model: qwen2.5-coder
defaultPrice: {{input: 1, output: 2}}
timeouts: {{connect: 5, read: 300}}
maxRequestBytes: 1048576
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "llm.yaml"
    path.write_text(text)
    return str(path)


def good(tmp_path: Path) -> str:
    key_file = tmp_path / "claude.key"
    key_file.write_text("sk-ant-secret\n")
    return write(tmp_path, GOOD.format(key_file=key_file))


def test_a_good_file(tmp_path: Path) -> None:
    config = load_config(good(tmp_path), env={"MY_OPENAI_KEY": "sk-openai-secret"})
    openai, claude, local = (config.providers[n] for n in ("openai", "claude", "local"))
    assert (openai.kind, openai.base_url, openai.api_key) == (
        "openai",
        "https://api.openai.com/v1",
        "sk-openai-secret",
    )
    assert (claude.base_url, claude.api_key) == ("https://api.anthropic.com", "sk-ant-secret")
    assert local.api_key == ""
    assert "sk-" not in repr(openai) + repr(claude)  # keys stay out of reprs
    sonnet = config.models["sonnet"]
    assert (sonnet.model, sonnet.provider.name, sonnet.max_output_tokens) == (
        "claude-sonnet-4-5",
        "claude",
        DEFAULT_MAX_OUTPUT_TOKENS,
    )
    assert sonnet.price == Price(Decimal(3), Decimal(15), Decimal("0.3"), Decimal("3.75"))
    mini = config.models["gpt-4.1-mini"]
    assert mini.model == "gpt-4.1-mini"  # default: the alias
    # an unset cache-write price is the input price: never cheaper than it may be
    assert mini.price.cache_write == Decimal("0.4")
    assert config.timeouts.connect == 5 and config.timeouts.read == 300
    assert config.max_request_bytes == 1048576


def test_resolving_names(tmp_path: Path) -> None:
    config = load_config(good(tmp_path), env={"MY_OPENAI_KEY": "k"})
    assert config.resolve("anthropic", "sonnet").model == "claude-sonnet-4-5"  # type: ignore[union-attr]
    assert config.resolve("openai", "sonnet") is None  # an Anthropic model on the OpenAI API
    passthrough = config.resolve("openai", "o3")
    assert passthrough is not None
    assert (passthrough.provider.name, passthrough.model, passthrough.configured) == (
        "openai",
        "o3",
        False,
    )
    assert passthrough.price == Price(
        Decimal(1), Decimal(2), Decimal(1), Decimal(1)
    )  # defaultPrice
    assert config.resolve("anthropic", "claude-opus") is None  # no Anthropic pass-through
    assert [r.alias for r in config.aliases("openai")] == ["gpt-4.1-mini", "qwen"]


def test_json_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "llm.json"
    path.write_text('{"providers": {"p": {"kind": "openai", "baseUrl": "http://x/v1"}}}')
    assert list(load_config(str(path), env={}).providers) == ["p"]


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        ({"provider": {}}, "provider", "unknown field"),
        ({"providers": []}, "providers", "mapping"),
        ({"providers": {"p": {"kind": "gemini"}}}, "providers.p.kind", "openai, anthropic"),
        (
            {"providers": {"p": {"kind": "openai", "baseUrl": "ftp://x"}}},
            "providers.p.baseUrl",
            "http(s)",
        ),
        (
            {"providers": {"p": {"kind": "openai", "baseUrl": "https://u:pw@x/v1"}}},
            "providers.p.baseUrl",
            "credentials",
        ),
        (
            {"providers": {"p": {"kind": "openai", "apiKeyEnv": "NOPE"}}},
            "providers.p.apiKeyEnv",
            "NOPE is not set",
        ),
        (
            {"providers": {"p": {"kind": "openai", "apiKeyFile": "/nonexistent/key"}}},
            "providers.p.apiKeyFile",
            "cannot read /nonexistent/key",
        ),
        (
            {"providers": {"p": {"kind": "openai", "apiKeyEnv": "A", "apiKeyFile": "/k"}}},
            "providers.p.apiKeyFile",
            "not both",
        ),
        (
            {"providers": {"p": {"kind": "openai", "passthrough": "yes"}}},
            "providers.p.passthrough",
            "true or false",
        ),
        (
            {
                "providers": {
                    "a": {"kind": "openai", "passthrough": True},
                    "b": {"kind": "openai", "passthrough": True},
                }
            },
            "providers.b.passthrough",
            "only one openai provider",
        ),
        ({"models": {"m": {"provider": "nope"}}}, "models.m.provider", "no provider 'nope'"),
        (
            {
                "providers": {"p": {"kind": "openai"}},
                "models": {"m": {"provider": "p", "price": {"input": -1}}},
            },
            "models.m.price.input",
            "≥ 0",
        ),
        (
            {
                "providers": {"p": {"kind": "openai"}},
                "models": {"m": {"provider": "p", "price": {"inptu": 1}}},
            },
            "models.m.price.inptu",
            "unknown field",
        ),
        (
            {
                "providers": {"p": {"kind": "openai"}},
                "models": {"m": {"provider": "p", "maxOutputTokens": 0}},
            },
            "models.m.maxOutputTokens",
            "≥ 1",
        ),
        ({"timeouts": {"read": 0}}, "timeouts.read", "positive"),
        ({"maxRequestBytes": "big"}, "maxRequestBytes", "whole number"),
    ],
)
def test_each_bad_field_is_named_with_the_file(
    tmp_path: Path, raw: dict[str, Any], field: str, problem: str
) -> None:
    path = write(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(LlmConfigError) as caught:
        load_config(path, env={"A": "x"})
    assert caught.value.detail.startswith(f"SANDBOX_LLM_CONFIG {path}: {field}: ")
    assert problem in caught.value.detail
    assert caught.value.code == "invalid-llm-config"


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(LlmConfigError, match=r"nope\.yaml: cannot read it"):
        load_config(str(tmp_path / "nope.yaml"), env={})
    bad = write(tmp_path, "providers: {p: [unclosed\n")
    with pytest.raises(LlmConfigError, match=r"not valid YAML or JSON \(line \d+, column \d+\)"):
        load_config(bad, env={})


def test_zero_config_from_the_servers_environment() -> None:
    config = zero_config(openai_api_key="sk-o", anthropic_api_key="sk-a")
    assert config.providers["openai"].base_url == "https://api.openai.com/v1"
    assert config.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert all(p.passthrough for p in config.providers.values())
    route = config.resolve("openai", "gpt-4.1-mini")
    assert route is not None and route.price.free and route.provider.api_key == "sk-o"
    local = zero_config(openai_base_url="http://127.0.0.1:8000/v1/")
    assert list(local.providers) == ["openai"]
    assert local.providers["openai"].base_url == "http://127.0.0.1:8000/v1"
    assert zero_config().providers == {}
    with pytest.raises(LlmConfigError, match="OPENAI_BASE_URL"):
        zero_config(openai_base_url="not a url")


def test_empty_path_means_zero_config() -> None:
    config = load_config("", env={}, anthropic_api_key="k")
    assert list(config.providers) == ["anthropic"]
    assert config.source == "environment"


def test_worst_case_prices_input_at_the_dearest_rate() -> None:
    config = parse_config(
        {
            "providers": {"p": {"kind": "anthropic"}},
            "models": {
                "m": {"provider": "p", "price": {"input": 3, "output": 15, "cacheWrite": 3.75}}
            },
        },
        source="x",
        env={},
    )
    route = config.models["m"]
    # 1000 input at 3.75 (cache write is dearest) + 2000 output at 15
    assert worst_case_cost(route, input_tokens=1000, output_tokens=2000) == Decimal("0.03375")
