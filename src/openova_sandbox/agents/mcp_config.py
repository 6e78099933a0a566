"""Each agent's MCP client config in the sandbox's HOME: one entry, ``openova-sandbox``,
that points the agent at the product's MCP server with the sandbox's MCP token
(issue 14, item 5; docs/mcp.md, "Agents configured automatically").

The entry names two variables of the agent's environment, never their values:
``SANDBOX_MCP_URL`` (where the server listens) and ``SANDBOX_MCP_TOKEN`` (the sandbox's
MCP token, issued at each spawn). Every agent here expands variables in its MCP config
when it starts, each in its own syntax, so the token is never written into a file of
the HOME (as for the gateway's token, docs/gateway.md "Config files in the HOME"), and a
token issued again, or a server that listens on another port after a restart, needs no
edit of the file:

============  ==================================  ===============  =====================
agent         file (under HOME)                   servers under    variables
============  ==================================  ===============  =====================
claude-code   ``.claude.json`` (user scope)       ``mcpServers``   ``${NAME}``
qwen-code     ``.qwen/settings.json``             ``mcpServers``   ``${NAME}``
opencode      ``.config/opencode/opencode.json``  ``mcp``          ``{env:NAME}``
cursor-agent  ``.cursor/mcp.json`` (global)       ``mcpServers``   ``${env:NAME}``
============  ==================================  ===============  =====================

Merging, never clobbering: the file is read, only the ``openova-sandbox`` entry's own
keys are set (the transport, URL and the ``Authorization`` header; a key the user added
to the entry, such as ``enabled: false`` or ``trust``, and other headers stay), and every
other server and setting is kept. A file that is not a JSON object (a user's file with
comments, or a broken one), or whose servers key is not an object, is left as it is and
reported. Nothing is written through a link, nor to a file whose folder leads out of the
HOME; a change is written to a new file that replaces the old one in one ``rename``
(mode kept, 0600 for a new file). Without ``SANDBOX_MCP_URL`` (no MCP server for this
sandbox) the entry is removed: it would name a variable nobody set.

The merge itself (:func:`merged`, :func:`without`, :func:`entry_for`) is pure; only
:func:`configure` touches the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER_NAME = "openova-sandbox"  # the same name as the Kubernetes ConfigMap's mcp.json
URL_VAR = "SANDBOX_MCP_URL"
TOKEN_VAR = "SANDBOX_MCP_TOKEN"
FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class McpClient:
    """Where one agent reads its MCP servers, and how it names an environment variable."""

    agent: str  # catalogue slug
    path: str  # relative to the HOME
    key: str  # the top-level key that maps server names to entries
    fixed: Mapping[str, Any]  # the entry's keys besides the URL and headers (transport)
    url_key: str  # the key that holds the URL
    var: str  # how the agent refers to a variable: "{}" is replaced by its name


CLIENTS: dict[str, McpClient] = {
    client.agent: client
    for client in (
        # claude-code expands ${NAME} in url and headers, also in the user scope's file
        McpClient("claude-code", ".claude.json", "mcpServers", {"type": "http"}, "url", "${{{}}}"),
        # qwen-code resolves $NAME and ${NAME} in every string of its settings files;
        # httpUrl is its Streamable HTTP transport (url alone would be SSE)
        McpClient("qwen-code", ".qwen/settings.json", "mcpServers", {}, "httpUrl", "${{{}}}"),
        # opencode substitutes {env:NAME} anywhere in its config; oauth off: the server
        # takes the bearer token only, so a refused token is reported, not an OAuth flow
        McpClient(
            "opencode",
            ".config/opencode/opencode.json",
            "mcp",
            {"type": "remote", "oauth": False},
            "url",
            "{{env:{}}}",
        ),
        # cursor-agent reads the global ~/.cursor/mcp.json; Cursor interpolates ${env:NAME}
        McpClient("cursor-agent", ".cursor/mcp.json", "mcpServers", {}, "url", "${{env:{}}}"),
    )
}


def entry_for(client: McpClient) -> dict[str, Any]:
    """The ``openova-sandbox`` entry for ``client``: its transport, the URL and the
    bearer token, both as references to the environment."""
    url = client.var.format(URL_VAR)
    token = client.var.format(TOKEN_VAR)
    entry: dict[str, Any] = dict(client.fixed)
    entry[client.url_key] = url
    entry["headers"] = {"Authorization": f"Bearer {token}"}
    return entry


class NotMergeable(ValueError):
    """The file's content is not something the entry can be merged into."""


def merged(document: Any, client: McpClient) -> dict[str, Any]:
    """``document`` (a parsed config file; ``None``: no file yet) with the
    ``openova-sandbox`` entry set. Raises :class:`NotMergeable` when the document is not
    a JSON object, or its servers key is not one."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise NotMergeable("the file is not a JSON object")
    servers = document.get(client.key, {})
    if not isinstance(servers, dict):
        raise NotMergeable(f'"{client.key}" is not a JSON object')
    ours = entry_for(client)
    before = servers.get(SERVER_NAME)
    entry = dict(before) if isinstance(before, dict) else {}
    headers = entry.get("headers")
    entry.update(ours)
    if isinstance(headers, dict):  # the user's other headers stay; Authorization is ours
        entry["headers"] = {
            **{k: v for k, v in headers.items() if k.lower() != "authorization"},
            **ours["headers"],
        }
    return {**document, client.key: {**servers, SERVER_NAME: entry}}


def without(document: Any, client: McpClient) -> Any:
    """``document`` without the ``openova-sandbox`` entry (as it is when it has none)."""
    if not isinstance(document, dict):
        return document
    servers = document.get(client.key)
    if not isinstance(servers, dict) or SERVER_NAME not in servers:
        return document
    rest = {k: v for k, v in servers.items() if k != SERVER_NAME}
    return {**document, client.key: rest}


# --------------------------------------------------------------------------- the disk


@dataclass(frozen=True)
class Outcome:
    """What :func:`configure` did: ``written`` (the file changed), ``unchanged``,
    ``skipped`` (left as it is: ``reason`` says why) or ``none`` (no client config for
    this agent)."""

    state: str
    path: str = ""
    reason: str = ""


def _target(home: Path, relative: str) -> Path | None:
    """``home/relative`` when writing it stays inside the HOME: not a link, and the part
    of its folder that exists resolves inside the HOME; ``None`` otherwise."""
    target = home / relative
    if target.is_symlink():
        return None
    inside = home.resolve()
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.resolve().is_relative_to(inside):
        return None
    return target


def _make_dirs(folder: Path, stop: Path) -> None:
    missing = []
    current = folder
    while current != stop and not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
            path.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask


def _replace(target: Path, text: str, mode: int) -> None:
    """Write ``text`` to a new file beside ``target`` and rename it over ``target``."""
    # a name of its own: two spawns of the sandbox may write the same file at once
    tmp = target.with_name(f".{target.name}.openova-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def configure(home: Path, agent: str, env: Mapping[str, str]) -> Outcome:
    """Set (or, without ``SANDBOX_MCP_URL`` in ``env``, remove) the ``openova-sandbox``
    entry in ``agent``'s MCP client config under ``home``. Raises ``OSError`` only for
    what the disk refuses (as seeding the HOME does)."""
    client = CLIENTS.get(agent)
    if client is None:
        return Outcome("none")
    serving = bool(env.get(URL_VAR)) and bool(env.get(TOKEN_VAR))
    target = _target(home, client.path)
    if target is None:
        return Outcome("skipped", client.path, "a link, or a folder that leads out of the HOME")
    try:
        raw = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raw = None
    if raw is None:
        if not serving:
            return Outcome("unchanged", client.path)
        _make_dirs(target.parent, home)
        _replace(target, _dump(merged(None, client)), FILE_MODE)
        return Outcome("written", client.path)
    try:
        document = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return Outcome("skipped", client.path, "not plain JSON (comments?): left as it is")
    try:
        updated = merged(document, client) if serving else without(document, client)
    except NotMergeable as exc:
        return Outcome("skipped", client.path, f"{exc}: left as it is")
    if updated == document:
        return Outcome("unchanged", client.path)
    _replace(target, _dump(updated), target.stat().st_mode & 0o777)
    return Outcome("written", client.path)


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
