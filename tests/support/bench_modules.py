"""The bench scripts' modules, for their tests: ``bench/`` is not a package, so each is
loaded from its file, once, under the name its neighbours import it by (``common``) or
a name of its own (``bench_<name>``), and registered in ``sys.modules`` (dataclasses look
their module up there)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str, file: str) -> ModuleType:
    """``bench/<file>`` as module ``name`` (the one already loaded, if any)."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def terminal() -> ModuleType:
    """bench/terminal.py (which imports bench/common.py as ``common``)."""
    load("common", "common.py")
    return load("bench_terminal", "terminal.py")
