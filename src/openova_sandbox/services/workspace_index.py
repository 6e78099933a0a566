"""The workspace of a sandbox, searched and read for its agents (issue 14,
``workspace.search`` and ``workspace.read``; docs/mcp.md, "Workspace search").

- **Index.** One tantivy index per sandbox (BM25), under
  ``<data_dir>/mcp/workspace-index/<sandbox uid>`` (0700, out of every sandbox's view),
  removed when the sandbox is deleted (``services.sandbox_reaper``). A document is a
  block of :data:`CHUNK_LINES` lines of one file, so a hit points at lines, not at a
  whole file; the file's path is indexed too, with its first block and a lower boost, so
  a file is also found by its name (once).
- **Incremental, checked at query time.** Each search first walks the workspace and
  compares every file's (mtime, size, inode) with the manifest of the last pass: only
  new or changed files are read and indexed again, files gone are removed, and the
  manifest is written after the commit. A search therefore sees every change made before
  it was asked; searches that arrive while a pass runs share the next one. No watcher:
  inotify needs a watch per folder (a limit per user) and loses events on overflow,
  while a walk of 10,000 unchanged files costs about 0.1 s on a busy 2-core machine
  (docs/mcp.md has the figures). The manifest says "pending" while a commit is under
  way: after a crash there, the next open builds the index again instead of trusting a
  manifest that may not match it.
- **Skipped:** symlinks (never followed), ``.git`` and the usual dependency and cache
  folders (:data:`SKIP_DIRS`), what each repository's ``.gitignore`` files leave out
  (git's rules, decided again only for changed files or rules), files over
  :data:`Limits.max_file_bytes`, binary files (a NUL byte, or not UTF-8), and anything
  beyond :data:`Limits.max_files` files or :data:`Limits.max_indexed_bytes` of text; a
  search says how many were left out.
- **Bounded memory.** The writer's heap is tantivy's floor (15 MB), one pass at a time
  per sandbox and at most :data:`Limits.concurrent_passes` in all; at most
  :data:`Limits.open_indexes` indexes stay open.
- **Confined.** Every file is opened relative to the workspace folder's descriptor, one
  component at a time with ``O_NOFOLLOW``: a path with ``..`` is refused before any I/O,
  and a symlink (even one swapped in while we walk) is never followed out of the
  workspace. ``workspace.read`` follows a symlink only when its target, resolved, is in
  the workspace, and then opens the resolved path again with ``O_NOFOLLOW``, so a link
  changed in between fails instead of escaping.
- **Kubernetes mode**: the workspace is a volume of the sandbox's pod, not on the API's
  machine; the tools are not offered there (``services.workspace`` stays ``None``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec
import structlog
import tantivy

from ..controller.local import workspace_path
from ..domain.errors import BackendUnavailable, Forbidden, Invalid, NotFound, SandboxError

log = structlog.get_logger(__name__)

INDEX_DIR = ("mcp", "workspace-index")
SCHEMA_VERSION = "4"  # another value: indexes of the old one are built again
VERSION_FILE = "schema-version"
MANIFEST_FILE = "manifest.json"
CHUNK_LINES = 40
WRITER_HEAP = 15_000_000  # tantivy's floor per writer thread
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        ".venv",
        "venv",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".cache",
        ".next",
        ".gradle",
    }
)
MAX_QUERY_CHARS = 500
MAX_PATH_CHARS = 4096
MAX_RESULTS = 50
LINES_PER_HIT = 5
LINE_CHARS = 240
BINARY_PROBE = 8192
READ_BLOCK = 65536
MAX_READ_LINES = 2000
DEFAULT_READ_LINES = 400
MAX_DIR_ENTRIES = 1000

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# the "default" tokenizer of tantivy (what the text fields use), to find matching lines
_ANALYZER = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    .filter(tantivy.Filter.remove_long(40))
    .filter(tantivy.Filter.lowercase())
    .build()
)
_OPERATORS = frozenset({"AND", "OR", "NOT"})


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1024 * 1024
    max_files: int = 20_000
    max_indexed_bytes: int = 64 * 1024 * 1024
    max_depth: int = 48
    read_bytes: int = 256 * 1024  # what one workspace.read returns at most
    read_scan_bytes: int = 32 * 1024 * 1024  # how far it reads to reach a start line
    open_indexes: int = 32
    concurrent_passes: int = 2


# --- confined paths -------------------------------------------------------------------


def relative_parts(path: object, *, field_name: str = "path") -> list[str]:
    """The components of a path inside the workspace (``""`` and ``.`` are the root);
    refuses what is not one before any I/O."""
    if not isinstance(path, str):
        raise Invalid(f"{field_name} is a string", code="invalid-path")
    if len(path) > MAX_PATH_CHARS or "\0" in path:
        raise Invalid(f"{field_name} is not a usable path", code="invalid-path")
    if path.startswith("/"):
        raise Invalid(
            f"{field_name} is relative to the workspace (no leading '/'): {path!r}",
            code="invalid-path",
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Forbidden(
            f"{field_name} may not contain '..': only the workspace can be read",
            code="path-outside-workspace",
        )
    return parts


class _SymlinkMet(Exception):
    """A component of the path is a symlink (not followed)."""


def _open_root(ws: Path) -> int:
    try:
        return os.open(ws, _OPEN_DIR)
    except FileNotFoundError:
        raise NotFound(
            "the sandbox has no workspace yet (it is still being created, or was deleted)",
            code="workspace-not-found",
        ) from None


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_beneath(root: int, parts: list[str]) -> int:
    """Open ``parts`` under ``root`` one component at a time, never following a link:
    a directory or a file descriptor (the caller closes it)."""
    fd = os.dup(root)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                nxt = os.open(part, _OPEN_FILE if last else _OPEN_DIR, dir_fd=fd)
            except OSError as exc:
                # a link opened with O_NOFOLLOW: ELOOP, or ENOTDIR where a folder is asked
                if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(fd, part)):
                    raise _SymlinkMet() from None
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    raise NotFound(
                        f"no such file or folder in the workspace: {'/'.join(parts)}",
                        code="path-not-found",
                    ) from None
                if exc.errno == errno.EACCES:
                    raise Forbidden(
                        f"not readable: {'/'.join(parts)}", code="path-not-readable"
                    ) from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_in_workspace(ws: Path, parts: list[str]) -> tuple[int, str]:
    """A descriptor of the workspace's ``parts`` and the path it was found at (the
    resolved one when a symlink inside the workspace led there)."""
    root = _open_root(ws)
    try:
        try:
            return _open_beneath(root, parts), "/".join(parts)
        except _SymlinkMet:
            pass
        base = os.path.realpath(ws)
        real = os.path.realpath(os.path.join(base, *parts))
        if real != base and not real.startswith(base + os.sep):
            raise Forbidden(
                f"{'/'.join(parts)} is a symlink that leads outside the workspace",
                code="path-outside-workspace",
            )
        resolved = [p for p in os.path.relpath(real, base).split(os.sep) if p not in ("", ".")]
        try:
            return _open_beneath(root, resolved), "/".join(resolved)
        except _SymlinkMet:  # the link changed while we looked
            raise Forbidden(
                f"{'/'.join(parts)} changed while it was opened; try again",
                code="path-changed",
            ) from None
    finally:
        os.close(root)


def _is_binary(head: bytes) -> bool:
    return b"\0" in head[:BINARY_PROBE]


def _read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        block = os.read(fd, min(READ_BLOCK, left))
        if not block:
            break
        chunks.append(block)
        left -= len(block)
    return b"".join(chunks)


# --- the index of one sandbox -----------------------------------------------------------


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("path", stored=True, tokenizer_name="raw")
    builder.add_text_field("pathtext")
    builder.add_facet_field("dir")
    builder.add_text_field("text", stored=True)
    builder.add_integer_field("line", stored=True)
    return builder.build()


SCHEMA = _schema()

# manifest entry: [mtime_ns, size, inode, state, the rules' fingerprint]
INDEXED, BINARY, LARGE, IGNORED = "indexed", "binary", "large", "ignored"
STATES = (INDEXED, BINARY, LARGE, IGNORED)
GITIGNORE = ".gitignore"
MAX_GITIGNORE_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Rules:
    """The ``.gitignore`` files that apply in a folder (base folder and patterns, the
    deepest last) and their fingerprint (which files, which versions), kept with each
    file's decision so an unchanged file under unchanged rules is not matched again."""

    specs: tuple[tuple[str, pathspec.GitIgnoreSpec], ...] = ()
    fingerprint: str = ""

    def ignored(self, rel: str, *, folder: bool) -> bool:
        """git's answer: the deepest file with a matching pattern decides, its last
        matching pattern wins (``!pattern`` takes a path back)."""
        for base, spec in reversed(self.specs):
            decided = spec.check_file(rel[len(base) :] + ("/" if folder else "")).include
            if decided is not None:
                return bool(decided)
        return False


@dataclass
class _Pass:
    """What one pass over a workspace found and did."""

    files: int = 0
    indexed_bytes: int = 0
    changed: int = 0
    removed: int = 0
    binary: int = 0
    large: int = 0
    over_limit: int = 0
    ignored: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "reindexed": self.changed,
            "removed": self.removed,
            "skipped": {
                "binary": self.binary,
                "tooLarge": self.large,
                "overLimit": self.over_limit,
                "gitignored": self.ignored,
            },
            "passMs": round(self.seconds * 1000, 1),
        }


@dataclass
class _SandboxIndex:
    uid: str
    folder: Path
    index: tantivy.Index
    manifest: dict[str, list[Any]]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_pass_started: float = -1.0
    last_pass: _Pass = field(default_factory=_Pass)
    users: int = 0  # searches holding it: it is not closed under them
    # parsed .gitignore files by folder, with the (mtime, size, inode) they were read at
    gitignores: dict[str, tuple[tuple[int, int, int], pathspec.GitIgnoreSpec]] = field(
        default_factory=dict
    )
    # folders' decisions by path: (the rules' fingerprint, ignored)
    folders: dict[str, tuple[str, bool]] = field(default_factory=dict)


def _chunks(text: str) -> list[tuple[int, str]]:
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [
        (start + 1, "\n".join(lines[start : start + CHUNK_LINES]))
        for start in range(0, len(lines), CHUNK_LINES)
    ]


def _dir_facet(rel: str) -> tantivy.Facet:
    parent = rel.rpartition("/")[0]
    return tantivy.Facet.from_string("/" + parent)


class _Walk:
    """One pass: walk the workspace by descriptors and bring the index up to date."""

    def __init__(self, entry: _SandboxIndex, limits: Limits) -> None:
        self.entry = entry
        self.limits = limits
        self.result = _Pass()
        self.seen: dict[str, list[Any]] = {}
        self.writer: tantivy.IndexWriter | None = None

    def _writer(self) -> tantivy.IndexWriter:
        if self.writer is None:
            self.writer = self.entry.index.writer(heap_size=WRITER_HEAP, num_threads=1)
        return self.writer

    def run(self, ws: Path) -> _Pass:
        started = time.perf_counter()
        root = _open_root(ws)
        try:
            self._walk(root)
        except BaseException:
            if self.writer is not None:
                self.writer.rollback()
                self.writer.wait_merging_threads()
                self.writer = None
            raise
        finally:
            os.close(root)
        old = self.entry.manifest
        for rel in old.keys() - self.seen.keys():
            self.result.removed += 1
            if old[rel][3] == INDEXED:
                self._writer().delete_documents_by_term("path", rel)
        if self.writer is not None:
            # "pending" until the commit is done: a crash in between is found at the next
            # open, which builds the index again rather than trust a manifest that may not
            # match it
            _save_manifest(self.entry.folder, self.seen, clean=False)
            self.writer.commit()
            self.writer.wait_merging_threads()  # releases the index's writer lock
            self.writer = None
            self.entry.index.reload()
            _save_manifest(self.entry.folder, self.seen)
            self.entry.manifest = self.seen
        elif old.keys() != self.seen.keys() or self.result.changed:
            _save_manifest(self.entry.folder, self.seen)
            self.entry.manifest = self.seen
        self.result.seconds = time.perf_counter() - started
        return self.result

    def _walk(self, root: int) -> None:
        stack: list[tuple[int, str, int, _Rules]] = [(os.dup(root), "", 0, _Rules())]
        try:
            while stack:
                fd, prefix, depth, rules = stack.pop()
                try:
                    rules = self._rules(fd, prefix, rules)
                    with os.scandir(fd) as entries:
                        listed = sorted(entries, key=lambda e: e.name)
                    for item in listed:
                        self._visit(fd, item, prefix, depth, rules, stack)
                finally:
                    os.close(fd)
        finally:
            for fd, _, _, _ in stack:
                os.close(fd)

    def _rules(self, fd: int, prefix: str, outer: _Rules) -> _Rules:
        """``outer`` and the folder's own ``.gitignore`` (a regular file, not a link), read
        again only when it changed."""
        try:
            st = os.stat(GITIGNORE, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return outer
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_GITIGNORE_BYTES:
            return outer
        version = (st.st_mtime_ns, st.st_size, st.st_ino)
        known = self.entry.gitignores.get(prefix)
        if known is None or known[0] != version:
            text = self._read(fd, GITIGNORE, MAX_GITIGNORE_BYTES) or ""
            known = self.entry.gitignores[prefix] = (
                version,
                pathspec.GitIgnoreSpec.from_lines(text.splitlines()),
            )
        mark = f"{outer.fingerprint}|{prefix}:{version[0]}:{version[1]}:{version[2]}"
        fingerprint = hashlib.sha256(mark.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return _Rules((*outer.specs, (prefix, known[1])), fingerprint)

    def _folder_ignored(self, rel: str, rules: _Rules) -> bool:
        if not rules.specs:
            return False
        known = self.entry.folders.get(rel)
        if known is not None and known[0] == rules.fingerprint:
            return known[1]
        ignored = rules.ignored(rel, folder=True)
        self.entry.folders[rel] = (rules.fingerprint, ignored)
        return ignored

    def _visit(
        self,
        parent: int,
        item: os.DirEntry[str],
        prefix: str,
        depth: int,
        rules: _Rules,
        stack: list[tuple[int, str, int, _Rules]],
    ) -> None:
        try:
            if item.is_symlink():
                return
            if item.is_dir(follow_symlinks=False):
                if item.name in SKIP_DIRS or depth >= self.limits.max_depth:
                    return
                if self._folder_ignored(prefix + item.name, rules):
                    self.result.ignored += 1
                    return
                fd = os.open(item.name, _OPEN_DIR, dir_fd=parent)
                stack.append((fd, f"{prefix}{item.name}/", depth + 1, rules))
                return
            if not item.is_file(follow_symlinks=False):
                return
            st = item.stat(follow_symlinks=False)
        except OSError:
            return  # gone or unreadable meanwhile: as if it were not there
        rel = prefix + item.name
        old = self.entry.manifest.get(rel)
        if (  # the common case, kept short: nothing changed, the old decision stands
            old is not None
            and old[0] == st.st_mtime_ns
            and old[1] == st.st_size
            and old[2] == st.st_ino
            and old[4] == rules.fingerprint
        ):
            self._unchanged(rel, old, st.st_size)
            return
        key = [st.st_mtime_ns, st.st_size, st.st_ino]
        unchanged = old is not None and old[:3] == key
        if unchanged and old is not None and old[4] == rules.fingerprint:
            ignored = old[3] == IGNORED
        else:
            ignored = bool(rules.specs) and rules.ignored(rel, folder=False)
        if ignored:
            self._replace(rel, old, None)
            self.seen[rel] = [*key, IGNORED, rules.fingerprint]
            self.result.ignored += 1
            return
        if self.result.files >= self.limits.max_files:
            self.result.over_limit += 1
            return
        self.result.files += 1
        if unchanged and old is not None and old[3] != IGNORED:
            if old[3] == INDEXED and not self._room(st.st_size):
                self._drop(rel, old)
                return
            self._count(old[3], st.st_size)
            self.seen[rel] = [*key, old[3], rules.fingerprint]
            return
        if st.st_size > self.limits.max_file_bytes:
            self._replace(rel, old, None)
            self.seen[rel] = [*key, LARGE, rules.fingerprint]
            self.result.large += 1
            return
        if not self._room(st.st_size):  # not read: it would not be indexed
            self._drop(rel, old)
            return
        text = self._read(parent, item.name, self.limits.max_file_bytes)
        if text is None:
            self._replace(rel, old, None)
            self.seen[rel] = [*key, BINARY, rules.fingerprint]
            self.result.binary += 1
            return
        self._replace(rel, old, text)
        self.seen[rel] = [*key, INDEXED, rules.fingerprint]
        self.result.indexed_bytes += st.st_size
        self.result.changed += 1

    def _unchanged(self, rel: str, old: list[Any], size: int) -> None:
        state = old[3]
        result = self.result
        if state == IGNORED:
            result.ignored += 1
        elif result.files >= self.limits.max_files:
            result.over_limit += 1
            return  # not in the manifest: its blocks go at the end of the pass
        else:
            result.files += 1
            if state == INDEXED:
                if result.indexed_bytes + size > self.limits.max_indexed_bytes:
                    self._drop(rel, old)
                    return
                result.indexed_bytes += size
            elif state == BINARY:
                result.binary += 1
            else:
                result.large += 1
        self.seen[rel] = old

    def _room(self, size: int) -> bool:
        return self.result.indexed_bytes + size <= self.limits.max_indexed_bytes

    def _count(self, state: str, size: int) -> None:
        if state == INDEXED:
            self.result.indexed_bytes += size
        elif state == BINARY:
            self.result.binary += 1
        elif state == LARGE:
            self.result.large += 1

    def _drop(self, rel: str, old: list[Any] | None) -> None:
        """A file beyond the bytes limit (others came first): out of the index, not read
        and not in the manifest (it is looked at again at each pass, at the cost of a
        stat)."""
        self._replace(rel, old, None)
        self.result.files -= 1
        self.result.over_limit += 1

    def _read(self, parent: int, name: str, limit: int) -> str | None:
        """The file's text; ``None`` when binary or not a regular file any more."""
        try:
            fd = os.open(name, _OPEN_FILE, dir_fd=parent)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            raw = _read_fd(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)
        if _is_binary(raw):
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _replace(self, rel: str, old: list[Any] | None, text: str | None) -> None:
        """The file's old blocks out of the index (the manifest matches the index: only
        a file it lists as indexed has some), and its new ones in."""
        if old is not None and old[3] == INDEXED:
            self._writer().delete_documents_by_term("path", rel)
        if text is None:
            return
        writer = self._writer()
        facet = _dir_facet(rel)
        for line, block in _chunks(text):
            doc = tantivy.Document(path=rel, text=block, line=line)
            if line == 1:  # a match on the name is one hit (the file's start), not one a block
                doc.add_text("pathtext", rel)
            doc.add_facet("dir", facet)
            writer.add_document(doc)


def _save_manifest(folder: Path, manifest: dict[str, list[Any]], *, clean: bool = True) -> None:
    """The files the index holds; ``clean=False`` while a commit is under way."""
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    body = {"state": "clean" if clean else "pending", "files": manifest}
    tmp.write_text(json.dumps(body, separators=(",", ":")))
    os.replace(tmp, folder / MANIFEST_FILE)


def _load_manifest(folder: Path) -> dict[str, list[Any]] | None:
    """The manifest of a clean index; ``None`` (build it again) when missing, damaged
    or left pending by a crash during a commit."""
    try:
        data: Any = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("state") != "clean":
        return None
    files = data.get("files")
    if not isinstance(files, dict):
        return None
    return {
        str(k): v
        for k, v in files.items()
        if isinstance(v, list) and len(v) == 5 and v[3] in STATES
    }


def _terms(query: str) -> set[str]:
    words = [w for w in query.split() if w not in _OPERATORS]
    words = [w.split(":", 1)[1] if ":" in w else w for w in words]
    return set(_ANALYZER.analyze(" ".join(words)))


# --- the service --------------------------------------------------------------------------


class WorkspaceIndex:
    """``workspace.search`` and ``workspace.read`` over the embedded workspaces."""

    def __init__(self, data_dir: Path, *, limits: Limits | None = None) -> None:
        self._data_dir = Path(data_dir)
        self._root = self._data_dir.joinpath(*INDEX_DIR)
        self.limits = limits or Limits()
        self._open: OrderedDict[str, _SandboxIndex] = OrderedDict()
        self._passes = asyncio.Semaphore(self.limits.concurrent_passes)
        self._opening = asyncio.Lock()

    def workspace(self, namespace: str, name: str) -> Path:
        return workspace_path(self._data_dir, namespace, name)

    def folder(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise Invalid("the sandbox has no usable uid", code="invalid-uid")
        return self._root / uid

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._open.clear()

    # --- search ---------------------------------------------------------------------

    async def search(
        self,
        namespace: str,
        name: str,
        uid: str,
        query: str,
        *,
        limit: int = 10,
        path: str = "",
    ) -> dict[str, Any]:
        query = query.strip()
        if not query:
            raise Invalid("query is empty", code="invalid-query")
        if len(query) > MAX_QUERY_CHARS:
            raise Invalid(f"query is at most {MAX_QUERY_CHARS} characters", code="invalid-query")
        if not 1 <= limit <= MAX_RESULTS:
            raise Invalid(f"limit is 1 to {MAX_RESULTS}", code="invalid-limit")
        prefix = relative_parts(path)
        ws = self.workspace(namespace, name)
        if not await asyncio.to_thread(ws.is_dir):
            _open_root(ws)  # raises the reason (no index is made for a missing workspace)
        entry = await self._entry(uid)
        try:
            asked = time.monotonic()
            async with entry.lock:
                if entry.last_pass_started < asked:  # no pass started since we were asked
                    entry.last_pass_started = time.monotonic()
                    async with self._passes:
                        entry.last_pass = await self._pass(entry, ws)
                found = await asyncio.to_thread(self._query, entry, query, limit, prefix)
                found["index"] = entry.last_pass.summary()
        finally:
            entry.users -= 1
        return found

    async def _pass(self, entry: _SandboxIndex, ws: Path) -> _Pass:
        """One pass; an index that fails (a full disk, a damaged file) is dropped, so the
        next search builds it again, and this one answers why."""
        try:
            return await asyncio.to_thread(_Walk(entry, self.limits).run, ws)
        except SandboxError:
            raise
        except (OSError, ValueError) as exc:
            log.warning("workspace_index.pass_failed", sandbox_uid=entry.uid, error=str(exc))
            if self._open.get(entry.uid) is entry:
                del self._open[entry.uid]
            await asyncio.to_thread(shutil.rmtree, entry.folder, True)
            raise BackendUnavailable(
                "the workspace index could not be updated (logged); it is built again at "
                "the next search",
                code="index-unavailable",
                retry_after=1,
            ) from exc

    def _query(
        self, entry: _SandboxIndex, query: str, limit: int, prefix: list[str]
    ) -> dict[str, Any]:
        terms = _terms(query)
        if not terms:
            raise Invalid("the query has no words to search for", code="invalid-query")
        index = entry.index
        parsed, _errors = index.parse_query_lenient(
            query, ["text", "pathtext"], field_boosts={"pathtext": 0.5}
        )
        if prefix:
            scope = tantivy.Query.term_query(
                SCHEMA, "dir", tantivy.Facet.from_string("/" + "/".join(prefix))
            )
            parsed = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, parsed), (tantivy.Occur.Must, scope)]
            )
        searcher = index.searcher()
        result = searcher.search(parsed, limit)
        hits = []
        for score, address in result.hits:
            doc = searcher.doc(address)
            start = int(doc.get_first("line") or 1)
            lines = str(doc.get_first("text") or "").split("\n")
            matched = [
                {"line": start + i, "text": line[:LINE_CHARS]}
                for i, line in enumerate(lines)
                if terms.intersection(_ANALYZER.analyze(line))
            ][:LINES_PER_HIT]
            hits.append(
                {
                    "path": doc.get_first("path"),
                    "score": round(float(score), 4),
                    "startLine": start,
                    "endLine": start + len(lines) - 1,
                    "lines": matched or [{"line": start, "text": lines[0][:LINE_CHARS]}],
                }
            )
        total = getattr(result, "count", None)  # counted (the stub does not declare it)
        return {"query": query, "total": int(total or 0), "hits": hits}

    async def _entry(self, uid: str) -> _SandboxIndex:
        """The sandbox's open index, held for one search (the caller releases it:
        ``users -= 1``)."""
        folder = self.folder(uid)
        async with self._opening:
            entry = self._open.get(uid)
            if entry is not None:
                self._open.move_to_end(uid)
            else:
                entry = self._open[uid] = await asyncio.to_thread(self._open_index, uid, folder)
                # the least recently used indexes close, never one a search holds (a second
                # Index on the same folder could not take its writer lock)
                idle = [u for u, e in self._open.items() if e.users == 0 and u != uid]
                for old in idle[: max(0, len(self._open) - self.limits.open_indexes)]:
                    del self._open[old]
            entry.users += 1
            return entry

    @staticmethod
    def _open_index(uid: str, folder: Path) -> _SandboxIndex:
        """The sandbox's index as it was left, or a new one when there is none, it is of
        another schema or its manifest is missing."""
        manifest = None
        version = folder / VERSION_FILE
        with contextlib.suppress(OSError):
            if version.read_text().strip() == SCHEMA_VERSION:
                manifest = _load_manifest(folder)
        if manifest is not None:
            try:
                return _SandboxIndex(uid, folder, tantivy.Index(SCHEMA, str(folder)), manifest)
            except ValueError as exc:
                log.warning("workspace_index.unreadable", sandbox_uid=uid, error=str(exc))
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(mode=0o700, parents=True)
        for parent in (folder.parent, folder.parent.parent):
            parent.chmod(0o700)
        index = tantivy.Index(SCHEMA, str(folder))
        version.write_text(SCHEMA_VERSION)
        _save_manifest(folder, {})
        return _SandboxIndex(uid, folder, index, {})

    # --- read ---------------------------------------------------------------------------

    async def read(
        self,
        namespace: str,
        name: str,
        path: str,
        *,
        line: int = 1,
        limit: int = DEFAULT_READ_LINES,
    ) -> dict[str, Any]:
        parts = relative_parts(path)
        if line < 1:
            raise Invalid("line starts at 1", code="invalid-line")
        if not 1 <= limit <= MAX_READ_LINES:
            raise Invalid(f"limit is 1 to {MAX_READ_LINES} lines", code="invalid-limit")
        ws = self.workspace(namespace, name)
        return await asyncio.to_thread(self._read, ws, parts, line, limit)

    def _read(self, ws: Path, parts: list[str], line: int, limit: int) -> dict[str, Any]:
        fd, found = open_in_workspace(ws, parts)
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                return _listing(fd, found)
            if not stat.S_ISREG(info.st_mode):
                raise Invalid(f"{found} is not a regular file", code="not-a-file")
            return self._read_lines(fd, found, info.st_size, line, limit)
        finally:
            os.close(fd)

    def _read_lines(self, fd: int, path: str, size: int, line: int, limit: int) -> dict[str, Any]:
        head = os.pread(fd, BINARY_PROBE, 0)
        if _is_binary(head):
            return {"path": path, "size": size, "binary": True, "content": None}
        # skip to the start line, reading at most read_scan_bytes
        number, offset, scanned = 1, 0, 0
        while number < line:
            block = os.pread(fd, READ_BLOCK, offset)
            if not block:
                raise Invalid(
                    f"{path} has {number} lines; line {line} is past its end",
                    code="line-past-end",
                )
            at = 0
            while number < line:
                nl = block.find(b"\n", at)
                if nl < 0:
                    break
                number += 1
                at = nl + 1
            offset += at if number == line else len(block)
            scanned += len(block)
            if number < line and scanned >= self.limits.read_scan_bytes:
                raise Invalid(
                    f"line {line} is beyond the first {self.limits.read_scan_bytes} bytes "
                    "that workspace.read scans; search for a term near it instead",
                    code="line-too-far",
                )
        if line > 1 and offset >= size:
            raise Invalid(
                f"{path} has {number - 1} lines; line {line} is past its end",
                code="line-past-end",
            )
        budget = self.limits.read_bytes
        raw = os.pread(fd, budget + 1, offset)
        lines = raw.split(b"\n")
        out: list[bytes] = []
        used = 0
        truncated = False
        for i, piece in enumerate(lines):
            last = i == len(lines) - 1
            if last and not piece:
                break  # the end of the file after a final newline
            if len(out) == limit or used + len(piece) + 1 > budget:
                truncated = True
                break
            if last and offset + len(raw) < size:
                truncated = True  # a line cut by the byte budget is not returned
                break
            out.append(piece)
            used += len(piece) + 1
        content = b"\n".join(out).decode("utf-8", errors="replace")
        return {
            "path": path,
            "size": size,
            "startLine": line,
            "endLine": line + len(out) - 1,
            "content": content,
            "truncated": truncated,
            "nextLine": line + len(out) if truncated else None,
        }

    # --- lifecycle with the sandboxes -----------------------------------------------------

    async def forget(self, uid: str) -> bool:
        """The sandbox is gone: its index goes too."""
        folder = self.folder(uid)
        entry = self._open.pop(uid, None)
        if entry is not None:
            async with entry.lock:
                pass  # a pass in progress ends first
        existed = folder.exists()
        if existed:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            log.info("workspace_index.removed", sandbox_uid=uid)
        return existed

    async def known(self) -> dict[str, float]:
        """The sandbox uids with an index, with when their folder was made."""

        def scan() -> dict[str, float]:
            try:
                return {p.name: p.stat().st_mtime for p in self._root.iterdir() if p.is_dir()}
            except FileNotFoundError:
                return {}

        return await asyncio.to_thread(scan)


def _listing(fd: int, path: str) -> dict[str, Any]:
    entries = []
    with os.scandir(fd) as it:
        listed = sorted(it, key=lambda e: e.name)
    for item in listed[:MAX_DIR_ENTRIES]:
        try:
            if item.is_symlink():
                kind, size = "symlink", None
            elif item.is_dir(follow_symlinks=False):
                kind, size = "dir", None
            else:
                kind, size = "file", item.stat(follow_symlinks=False).st_size
        except OSError:
            continue
        entries.append({"name": item.name, "type": kind, "size": size})
    return {
        "path": path,
        "directory": True,
        "entries": entries,
        "truncated": len(listed) > MAX_DIR_ENTRIES,
    }
