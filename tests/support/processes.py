"""The machine's processes, read from /proc: for tests that must wait until a process
they started indirectly (a command typed into a shell) is running, or check that one is
gone."""

from __future__ import annotations

from pathlib import Path


def process_table() -> dict[int, tuple[int, str]]:
    """Every live process: pid -> (parent pid, command name)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text(errors="replace")
        except OSError:  # it ended while we looked
            continue
        # the name sits in parentheses and may itself contain spaces or parentheses
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        parent = int(raw[raw.rindex(")") + 2 :].split()[1])
        table[int(stat.parent.name)] = (parent, name)
    return table


def children_named(parent: int, name: str) -> list[int]:
    """The pids of ``parent``'s children called ``name``."""
    return [pid for pid, (ppid, n) in process_table().items() if ppid == parent and n == name]


def grandchildren_named(ancestor: int, name: str) -> list[int]:
    """The pids of processes called ``name`` whose parent is a child of ``ancestor``."""
    table = process_table()
    return [
        pid
        for pid, (ppid, n) in table.items()
        if n == name and table.get(ppid, (0, ""))[0] == ancestor
    ]


def descendants_named(ancestor: int, name: str) -> list[int]:
    """The pids of processes called ``name`` anywhere below ``ancestor`` (an isolated
    terminal's processes run a few levels down: the launcher, its namespace's init,
    the agent; docs/architecture.md, "Isolation")."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(children.get(ancestor, []))
    while stack:
        pid = stack.pop()
        if table[pid][1] == name:
            found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def processes_mentioning(text: str) -> list[str]:
    """The command lines (space-joined) of every live process whose argv contains ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            raw = cmdline.read_bytes()
        except OSError:  # it ended while we looked
            continue
        if text.encode() in raw:
            found.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return found


def descendants(ancestor: int) -> list[int]:
    """``ancestor`` and every live process below it."""
    table = process_table()
    found = [ancestor]
    for pid in found:
        found += [child for child, (ppid, _) in table.items() if ppid == pid]
    return found


def environ(pid: int) -> dict[str, str]:
    """A process's environment as it was started (``/proc/<pid>/environ``); empty when
    it has ended."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.partition(b"=") for entry in raw.split(b"\0") if entry)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}
