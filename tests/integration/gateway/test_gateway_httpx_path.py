"""The same gateway behaviour when upstreams are reached through httpx (what happens for
an origin the environment sends through a proxy): byte-for-byte answers, streams chunk
by chunk, the caller leaving cancels the upstream, unreachable and silent upstreams."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from . import test_gateway_faults as faults
from . import test_gateway_proxy as proxy
from .conftest import Gateway


@pytest.fixture
def gw_httpx(make_gateway: Callable[..., Gateway]) -> Gateway:
    gateway = make_gateway(via_httpx=True)
    assert gateway.service.upstream._via_httpx
    return gateway


def test_non_streamed(gw_httpx: Gateway) -> None:
    proxy.test_openai_chat_non_streamed_is_passed_byte_for_byte_and_metered(gw_httpx)


def test_streamed_chunk_by_chunk(gw_httpx: Gateway) -> None:
    proxy.test_openai_chat_stream_arrives_chunk_by_chunk_with_usage_requested(gw_httpx)


def test_anthropic(gw_httpx: Gateway) -> None:
    proxy.test_anthropic_messages_streamed_and_not(gw_httpx)


def test_caller_leaving(gw_httpx: Gateway) -> None:
    faults.test_a_caller_leaving_mid_stream_cancels_the_upstream_and_is_metered(gw_httpx)


def test_unreachable(gw_httpx: Gateway) -> None:
    faults.test_an_unreachable_upstream_is_502(gw_httpx)


def test_silent(gw_httpx: Gateway) -> None:
    faults.test_an_upstream_that_does_not_answer_in_time_is_504(gw_httpx)


def test_broken_stream(gw_httpx: Gateway) -> None:
    faults.test_a_stream_the_upstream_breaks_off_ends_with_an_error_event(gw_httpx)
