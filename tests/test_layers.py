"""The package's layers: what each part may import.

spec (declarations, no torch) < components, evaluate (the torch side of kinds) < backends < runtime, compiler
< cli. Checked twice: dynamically (what a fresh interpreter loads) and statically (every executed import
statement of ``ddspec/**/*.py``, module-level and inside functions, read with ``ast``; imports under
``if TYPE_CHECKING:`` only name types for annotations and are not counted)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ddspec"


def _loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str], *prefixes: str) -> list[str]:
    return [m for m in modules if m == "torch" or m.startswith(("torch.", *prefixes))]


def test_spec_layer_loads_neither_torch_nor_backends() -> None:
    loaded = _loaded_after("import ddspec.spec\nddspec.spec.problem_model()")
    assert "ddspec.spec.problem" in loaded  # the check ran
    assert _heavy(loaded, "ddspec.backends", "ddspec.components", "ddspec.runtime", "ddspec.evaluate") == []


def test_validate_loads_backend_declarations_only() -> None:
    """``ddspec validate`` compiles, so it reads the backends' declarations, but never their run modules."""
    loaded = _loaded_after(
        "from ddspec.cli import main\nassert main(['validate', 'examples/quickstart.yaml']) == 0"
    )
    assert "ddspec.backends.matching" in loaded  # the quickstart's backend was consulted
    assert _heavy(loaded, "ddspec.components", "ddspec.runtime", "ddspec.evaluate") == []
    assert [m for m in loaded if m.startswith("ddspec.backends.") and m.endswith(".run")] == []


# -- static import graph --------------------------------------------------------------------------


class Import(NamedTuple):
    module: str  # the importing module, e.g. ddspec.spec.data
    target: str  # the imported module, e.g. ddspec.components.data.files
    line: int
    type_only: bool  # under `if TYPE_CHECKING:` (never executed)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = ROOT) -> list[Import]:
    """Every ``ddspec`` import of one file under ``root``, wherever it stands (module level, functions,
    TYPE_CHECKING)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            targets = [".".join([*base, node.module] if node.module else base)]
            # `from ddspec.x import y` may import the submodule ddspec.x.y
            targets += [f"{targets[0]}.{alias.name}" for alias in node.names
                        if _is_module(f"{targets[0]}.{alias.name}", root)]
        else:
            continue
        found += [Import(name, t, node.lineno, id(node) in type_only) for t in targets if t.split(".")[0] == "ddspec"]
    return found


def _is_module(dotted: str, root: Path) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _all_imports() -> list[Import]:
    return [i for path in sorted(PACKAGE.rglob("*.py")) for i in _imports(path)]


def _layer(module: str) -> str:
    """``ddspec.spec.data`` → ``spec``; ``ddspec.registry`` → ``registry``; the package facade → ``ddspec``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ddspec"


FORBIDDEN = {
    "spec": {"components", "backends", "runtime", "evaluate", "compiler", "analysis", "cli"},
    "components": {"runtime", "backends", "compiler", "cli"},
    "evaluate": {"runtime", "backends", "compiler", "cli"},
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    """No executed import (module level or inside a function) reaches a layer above; annotations may name
    higher types under ``TYPE_CHECKING`` (e.g. a spec's ``findings(analysis: Analysis)``)."""
    bad = [f"{i.module}:{i.line} imports {i.target}" for i in _all_imports()
           if _layer(i.module) == layer and _layer(i.target) in FORBIDDEN[layer] and not i.type_only]
    assert bad == []


def test_the_scan_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    """The scanner itself: an import inside a function, a relative one and a TYPE_CHECKING one are all found."""
    pkg = tmp_path / "ddspec" / "spec"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import y\nif TYPE_CHECKING:\n    import ddspec.runtime\n"
        "def f():\n    from ddspec.components.data import files\n"
    )
    found = _imports(pkg / "x.py", tmp_path)
    assert {(i.target, i.line, i.type_only) for i in found} == {
        ("ddspec.spec", 2, False), ("ddspec.runtime", 4, True), ("ddspec.components.data", 6, False),
    }


def test_layer_graph_is_acyclic() -> None:
    """Between the parts of the package, executed imports (not ``TYPE_CHECKING`` ones) form no cycle. The
    ``ddspec`` facade is left out: it only re-exports, lazily, what the layers define."""
    graph: dict[str, set[str]] = {}
    for i in _all_imports():
        a, b = _layer(i.module), _layer(i.target)
        if a != b and not i.type_only and "ddspec" not in (a, b):
            graph.setdefault(a, set()).add(b)
    assert {"spec", "components", "backends", "compiler", "runtime", "cli"} <= set(graph)  # the scan saw them
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle between layers: {' -> '.join(exc.args[1])}")
    assert order.index("spec") < order.index("components") < order.index("runtime") < order.index("cli")
