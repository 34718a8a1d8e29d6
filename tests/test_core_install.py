"""A Pi installs only the core (``pip install sigmoid-edge``): the daemon must need nothing else.

Two checks: what ``import edge.daemon`` and a running ``sigmoid-edge run`` actually load
(a subprocess's ``sys.modules``), and that every third-party module the daemon's core
imports at module level is one of pyproject's core dependencies (read with ``ast``, so a
new import fails here before it fails on a Pi).
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from edge.runtime import onnxruntime_backend
from tests.daemon_helpers import ROOT
from tests.models import mean_model
from tests.mqtt_helpers import Collector, mosquitto_pub

# Never loaded by the daemon (cryptography only with --trusted-key).
FORBIDDEN = ("onnx", "matplotlib", "amqtt", "cryptography", "tqdm", "trainer", "edge.tools",
             "sklearn", "threadpoolctl")


def forbidden_in(modules) -> list[str]:
    """The modules of ``modules`` that are, or are under, a name of :data:`FORBIDDEN`."""
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_forbidden_in_matches_packages_not_prefixes():
    assert forbidden_in(["onnx", "onnx.helper", "onnxruntime", "trainer.fit", "edge.topics",
                         "edge.tools.demo"]) == ["edge.tools.demo", "onnx", "onnx.helper",
                                                  "trainer.fit"]


def test_importing_the_daemon_loads_only_the_core():
    code = "import json, sys, edge.daemon, edge.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert forbidden_in(json.loads(out)) == []


# The daemon as `sigmoid-edge run` would start it, writing its sys.modules when it exits.
RUN = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
from edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_running_daemon_loads_only_the_core(broker, tmp_path):
    model = mean_model(tmp_path / "model.onnx")
    modules_out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGMOID_EDGE_")}
    env.update(PYTHONPATH=str(ROOT), MODULES_OUT=str(modules_out))
    with Collector(broker, "sigmoid-edge/testnode/status", "edge/+/classification") as out:
        proc = subprocess.Popen([sys.executable, "-c", RUN, "run", "--model", str(model),
                                 "--broker", broker.url, "--node", "testnode"],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            assert out.get(15).payload == b"online"
            # One message through the whole path: payload, window, inference, publish.
            mosquitto_pub(broker, "sensors/t/a", json.dumps({"samples": [[2, 2, 2]] * 8}))
            assert out.get(10).topic == "edge/t/classification"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0, proc.stdout.read().decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    modules = json.loads(modules_out.read_text())
    # runtime auto: onnxruntime where it is installed, else (32-bit ARM) the numpy runtime
    backend = "onnxruntime" if onnxruntime_backend.available() else "edge.runtime.numpy_backend"
    assert backend in modules and "edge.runner" in modules
    assert forbidden_in(modules) == []


def core_modules() -> list[Path]:
    """The daemon's core: every module under edge/ but edge/tools/."""
    return sorted(p for p in (ROOT / "edge").rglob("*.py")
                  if "tools" not in p.relative_to(ROOT / "edge").parts)


def third_party_imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names of non-standard, non-project modules ``path`` imports:
    (when the module loads, only inside functions)."""
    top: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module]
        for name in names:
            root = name.split(".")[0]
            if root not in sys.stdlib_module_names and root not in ("edge", "trainer"):
                (lazy if in_function else top).add(root)
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                           | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), False)
    return top, lazy


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


@functools.cache
def _import_names() -> dict[str, list[str]]:
    return packages_distributions()  # reads every installed distribution: once


def distributions_of(module: str) -> set[str]:
    """The distributions that install ``module``; for one not installed here (onnxruntime on
    32-bit ARM: a dependency only where its wheels exist), the one named like it."""
    return ({d.lower().replace("_", "-") for d in _import_names().get(module, [])}
            or {module.lower().replace("_", "-")})


def test_the_core_dependencies_cover_what_the_core_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = requirement_names(project["dependencies"])
    extras = {name: requirement_names(reqs)
              for name, reqs in project["optional-dependencies"].items()}
    missing, undeclared = {}, {}
    for path in core_modules():
        top, lazy = third_party_imports(path)
        where = str(path.relative_to(ROOT))
        for module in top:
            if not distributions_of(module) & core:
                missing.setdefault(where, []).append(module)
        for module in lazy:
            dists = distributions_of(module)
            if not dists & core and not any(dists & e for e in extras.values()):
                undeclared.setdefault(where, []).append(module)
    # Imported when the module loads, so the daemon needs it: a core dependency.
    assert missing == {}, "imported at module level but not a core dependency"
    # Imported on demand (e.g. cryptography for --trusted-key): at least in an extra.
    assert undeclared == {}, "imported but in no dependency list of pyproject.toml"


@pytest.mark.parametrize("module, expected", [("paho", "paho-mqtt"), ("numpy", "numpy")])
def test_distribution_lookup(module, expected):
    assert expected in distributions_of(module)
