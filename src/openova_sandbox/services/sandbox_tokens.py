"""Each sandbox's gateway token in embedded mode: issued when a terminal of the sandbox
first starts, handed to its processes, revoked when the sandbox is deleted.

The ledger stores only the token's SHA-256 (``issue_token``); the plaintext is kept here,
in memory, for as long as this server process runs, so every terminal of the sandbox
(the agent, the Shell, extra terminals, an agent started again) gets the same token.
A restart forgets it: the next start of a terminal of that sandbox issues a new one,
which replaces the old one in the ledger (the old one stops working). The server also
revokes what it issued when it stops, so no token outlives the process that handed it
out. Tokens are issued one at a time per sandbox: two terminals starting at once must
not replace each other's token.

The URL the agents use is the server's own loopback address (they run on this machine),
learnt when the server is listening (:meth:`SandboxTokens.listening`): the one place
that decides it.
"""

from __future__ import annotations

import asyncio

import structlog

from ..domain.errors import SandboxError
from ..domain.ledger import identity_of
from ..domain.model import Sandbox
from ..domain.model_access import (
    PLACEHOLDER_TOKEN,
    PLACEHOLDER_URL,
    ModelAccess,
    loopback_url,
)
from .gateway_ledger import GatewayLedger

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (namespace, name)


def preview_access(*, openai: bool, anthropic: bool, gateway_url: str = "") -> ModelAccess:
    """What a sandbox will get, with stand-ins for the token (not issued before a
    terminal starts) and the URL (not known before the server listens): for the checks
    that ask whether an agent could start."""
    return ModelAccess(
        gateway_url=gateway_url or PLACEHOLDER_URL,
        token=PLACEHOLDER_TOKEN,
        openai=openai,
        anthropic=anthropic,
    )


class SandboxTokens:
    """The sandboxes' gateway tokens of this process, over the gateway's ledger.
    ``openai``/``anthropic``: which protocols the gateway serves (it has a provider for
    them); the variables of the others are not given."""

    def __init__(
        self,
        ledger: GatewayLedger,
        *,
        openai: bool = True,
        anthropic: bool = True,
        gateway_url: str = "",
    ) -> None:
        self._ledger = ledger
        self.openai = openai
        self.anthropic = anthropic
        self.gateway_url = gateway_url
        self._tokens: dict[Key, str] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._early: set[asyncio.Task[None]] = set()

    def listening(self, host: str, port: int) -> None:
        """The server is listening on ``host:port``: agents reach the gateway there."""
        self.gateway_url = loopback_url(host, port)
        log.info("gateway.agents_url", url=self.gateway_url)

    # --- what the terminals get -----------------------------------------------------

    def access(self, sandbox: Sandbox) -> ModelAccess:
        """The sandbox's variables: the gateway's URLs and its token, once issued."""
        return ModelAccess(
            gateway_url=self.gateway_url,
            token=self._tokens.get(sandbox.key, ""),
            openai=self.openai,
            anthropic=self.anthropic,
        )

    def preview(self) -> ModelAccess:
        """See :func:`preview_access`."""
        return preview_access(
            openai=self.openai, anthropic=self.anthropic, gateway_url=self.gateway_url
        )

    def issued(self, sandbox: Sandbox) -> bool:
        return sandbox.key in self._tokens

    async def ensure(self, sandbox: Sandbox) -> None:
        """Issue the sandbox's token unless this process has one for it already.
        Raises ``BackendUnavailable`` when the ledger cannot be reached."""
        key = sandbox.key
        if key in self._tokens:
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._tokens:
                return
            self._tokens[key] = await self._ledger.issue_token(identity_of(sandbox))
        log.info("gateway.token_issued", sandbox=sandbox.name, namespace=sandbox.namespace)

    def ensure_soon(self, sandbox: Sandbox) -> None:
        """Start :meth:`ensure` in the background: an attach waiting for the sandbox to
        turn Ready issues the token meanwhile, so the agent's spawn does not wait for the
        ledger's write (issue 10). A failure is only logged here; the spawn's own
        :meth:`ensure` tries again and reports it."""
        if sandbox.key in self._tokens or sandbox.deleting:
            return
        task = asyncio.create_task(self.ensure(sandbox), name=f"token-{sandbox.name}")
        self._early.add(task)
        task.add_done_callback(self._early_done)

    def _early_done(self, task: asyncio.Task[None]) -> None:
        self._early.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("gateway.token_early_failed", error=str(task.exception()))

    async def revoke(self, namespace: str, name: str) -> None:
        """The sandbox is gone: its token stops working (whichever process issued it)."""
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._tokens.pop(key, None)
            await self._ledger.revoke(namespace, name)
        self._locks.pop(key, None)
        log.info("gateway.token_revoked", sandbox=name, namespace=namespace)

    # --- the server's lifecycle -------------------------------------------------------

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Revoke what this process issued: the plaintexts die with it, and so should
        the tokens (their agents are being stopped too). Best effort."""
        for namespace, name in list(self._tokens):
            try:
                await self._ledger.revoke(namespace, name)
            except SandboxError as exc:
                log.warning(
                    "gateway.token_revoke_failed",
                    sandbox=name,
                    namespace=namespace,
                    error=exc.detail,
                )
        self._tokens.clear()
