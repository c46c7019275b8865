"""Run a Python script in a fresh interpreter where ``hf_shapley`` cannot be imported.

What a user without the package has: the script must load everything from the code files of a
saved model directory (``trust_remote_code=True``). A meta-path finder ahead of the editable
install's finder refuses ``hf_shapley``, and the ``src`` directory is removed from
``sys.path``; the Hub is switched off and the module cache is private to the run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import hf_shapley

SRC_DIR = str(Path(hf_shapley.__file__).resolve().parent.parent)

# Prepended to every child script; sets BLOCKED (True when the block works).
PRELUDE = r"""
import importlib.abc
import os
import sys


class BlockHfShapley(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "hf_shapley" or fullname.startswith("hf_shapley."):
            raise ModuleNotFoundError(f"hf_shapley is blocked in this process ({fullname})")
        return None


sys.meta_path.insert(0, BlockHfShapley())
_src_dir = os.path.realpath(os.environ["HF_SHAPLEY_BLOCKED_SRC"])
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != _src_dir]

try:
    import hf_shapley  # noqa: F401
    BLOCKED = False
except ModuleNotFoundError:
    BLOCKED = True


def loaded_hf_shapley_modules():
    return sorted(
        m for m, mod in sys.modules.items() if m.split(".")[0] == "hf_shapley" and mod is not None
    )


def src_on_path():
    return any(os.path.realpath(p or os.getcwd()) == _src_dir for p in sys.path)
"""


def run_without_package(
    script: str, args: list[str], workdir: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``PRELUDE + script`` with ``args`` in ``workdir``, offline, without hf_shapley."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_CACHE")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(workdir / "hf_home"),
        HF_MODULES_CACHE=str(workdir / "hf_modules"),
        HF_SHAPLEY_BLOCKED_SRC=SRC_DIR,
        OMP_NUM_THREADS="1",
    )
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + script, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def absolute_package_imports(path: Path) -> list[str]:
    """The ``hf_shapley`` modules a code file imports absolutely (a shipped file must not)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "hf_shapley"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found += [node.module] if (node.module or "").split(".")[0] == "hf_shapley" else []
    return found
