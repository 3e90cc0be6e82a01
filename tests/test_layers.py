"""The package's layer rule, checked on every import of every module, function-level imports included.

A module may import modules of its own top-level package, or of a package in a lower layer; never one in the same
layer or above. Within a package the imports must not form a cycle. ``docs/ARCHITECTURE.md`` shows the layers.
Imports under ``if TYPE_CHECKING:`` are skipped: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dfine

PACKAGE_ROOT = Path(dfine.__file__).parent

# Bottom first. Each entry is the top-level part of a module name below ``dfine`` ("" is the package root).
LAYERS: list[set[str]] = [
    {"errors", "version"},
    {"utils"},
    {"config", "ops", "imaging"},
    {"hub"},
    {"loss", "processing", "runtime"},
    {"model", "data"},
    {"engine", "export"},
    {"predict"},
    {"demo"},
    {"cli"},
    {""},
]

# Imports that break the rule on purpose, each with its reason: (importing module, imported module) -> reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("dfine.config.dfine_config", "dfine.model.resolve"):
        "DFineConfig.from_pretrained, as in transformers, also takes a weights-only original .pth; its size is read "
        "off its tensors by building each size's network on the meta device, which only the model layer can do",
    ("dfine.config.dfine_config", "dfine.config.presets"):
        "DFineConfig.from_preset is a shortcut to the preset table, and the table's entries are DFineConfigs",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _reexports(package: str) -> dict[str, str]:
    """Names a package's ``__init__`` imports from its submodules: name -> defining module."""
    path = MODULES.get(package)
    if path is None or path.name != "__init__.py":
        return {}
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package + "."):
            for alias in node.names:
                found[alias.asname or alias.name] = node.module
    return found


def imports_of(module: str) -> set[str]:
    """The dfine modules ``module`` imports anywhere in its body (a name re-exported by a package counts as an
    import of the submodule that defines it)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dfine")
            continue
        base = node.module or ""
        if node.level:
            parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        if base.split(".")[0] != "dfine":
            continue
        reexported = _reexports(base)
        for alias in node.names:
            name = f"{base}.{alias.name}"
            found.add(name if name in MODULES else reexported.get(alias.name, base))
    return {m for m in found if m != module}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: its package {top!r} is in no layer of LAYERS; add it")


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for module in sorted(MODULES):
        for target in sorted(imports_of(module)):
            if target not in MODULES or (module, target) in ALLOWED:
                continue
            same_package = _package(module) == _package(target)
            if not same_package and _layer(target) >= _layer(module):
                wrong.append(f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = {m: {t for t in imports_of(m) if t in MODULES and (m, t) not in ALLOWED} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_allowed_exceptions_are_still_needed() -> None:
    for importer, target in ALLOWED:
        assert target in imports_of(importer), f"{importer} no longer imports {target}: remove it from ALLOWED"


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    """The rule is only as good as the parser: an import inside a function must count."""
    source = "def f():\n    from dfine.model.detection import DFineForObjectDetection\n"
    tree = ast.parse(source)
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found and found[0].module == "dfine.model.detection"
    assert "dfine.model.resolve" in imports_of("dfine.config.dfine_config")  # a function-level import
