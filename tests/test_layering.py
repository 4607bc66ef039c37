"""The layering of ``crlm_lib`` (``docs/design.md``, *Layers*): every import, at the top of a
module or inside a function, goes to the module's own layer or a lower one, and no import cycle
exists among the modules, function-local imports included.

The checker is an ``ast`` scan (no module is imported); it is tested on small synthetic
packages and on a copy of ``crlm_lib`` with a planted back import, so that it can fail.
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


@dataclass(frozen=True)
class Import:
    """One import statement's target module, where it is, and whether it runs in a function."""

    source: str
    target: str
    path: Path
    line: int
    local: bool


def read_layers(design: Path = DESIGN) -> list[tuple[str, list[str]]]:
    """The *Layers* list of ``docs/design.md``, lowest first: ``[(name, [token, ...])]`` from
    lines ``N. **name**: `module`, `package.*`, ...``."""
    text = design.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for match in re.finditer(r"^\d+\. \*\*([\w-]+)\*\*: (.+)$", section, flags=re.M):
        layers.append((match.group(1), re.findall(r"`([\w.*]+)`", match.group(2))))
    return layers


def _modules(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` of every module under ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_init)
    return out


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks (annotations, never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (
            (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        ):
            skip.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skip


def _targets(node: ast.AST, package: str, modules: dict) -> list[str]:
    """The modules of the package that an import statement imports (the deepest existing
    module of each name: ``from pkg import sub`` is ``pkg.sub``, ``from pkg import name`` is
    ``pkg``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parent, *([base] if base else [])])
        names = [f"{base}.{alias.name}" for alias in node.names]
        names = [n if n in modules else base for n in names]
    out = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def scan_imports(package_dir: Path) -> tuple[dict[str, tuple[Path, bool]], list[Import]]:
    """Every import of one package's modules by its modules: module-level and function-local,
    plus the implicit import of a package's ``__init__`` when a module outside that package
    imports one of its submodules. Imports under ``if TYPE_CHECKING:`` are left out."""
    modules = _modules(package_dir)
    found: list[Import] = []
    for name, (path, is_init) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(stmt) for stmt in tree.body}
        skip = _type_checking_nodes(tree)
        package = name if is_init else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skip:
                continue
            for target in _targets(node, package, modules):
                chain = [target]
                parent = target.rpartition(".")[0]
                while parent:  # importing a.b.c runs a.b's __init__ first
                    if not (name == parent or name.startswith(parent + ".")):
                        chain.append(parent)
                    parent = parent.rpartition(".")[0]
                for t in chain:
                    if t != name:
                        found.append(Import(name, t, path, node.lineno, id(node) not in top))
    return modules, found


def layer_of(module: str, layers: list[tuple[str, list[str]]], package: str) -> int | None:
    """The index of ``module``'s layer: an exact token first, else the longest ``prefix.*``;
    tokens are relative to ``package`` (the token ``package`` itself is its ``__init__``)."""
    rel = "" if module == package else module.removeprefix(package + ".")
    best: tuple[int, int] | None = None
    for index, (_, tokens) in enumerate(layers):
        for token in tokens:
            if token == package and rel == "" or token == rel:
                return index
            stem = token.removesuffix(".*")
            if token.endswith(".*") and (rel == stem or rel.startswith(stem + ".")):
                if best is None or len(stem) > best[0]:
                    best = (len(stem), index)
    return None if best is None else best[1]


def cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def layering_problems(package_dir: Path, layers: list[tuple[str, list[str]]]) -> list[str]:
    """Every module without a layer, every import of a higher layer and every import cycle of
    the package at ``package_dir``, one line each (empty: the layering holds)."""
    package = package_dir.name
    modules, imports = scan_imports(package_dir)
    problems = []
    where = {m: layer_of(m, layers, package) for m in modules}
    problems += [f"{m}: no layer in docs/design.md" for m, i in where.items() if i is None]
    for imp in imports:
        low, high = where.get(imp.source), where.get(imp.target)
        if low is not None and high is not None and high > low:
            kind = "function-local import" if imp.local else "import"
            problems.append(
                f"{imp.path.relative_to(package_dir.parent)}:{imp.line}: {kind} of {imp.target} "
                f"({layers[high][0]}) from {imp.source} ({layers[low][0]}) calls up the layers"
            )
    problems += [f"import cycle: {' <-> '.join(c)}" for c in cycles(imports)]
    return problems


# --------------------------------------------------------------------------------------------
# the library
# --------------------------------------------------------------------------------------------


def test_design_lists_the_layers_lowest_first():
    layers = read_layers()
    names = [name for name, _ in layers]
    assert names[0] == "base" and names[-1] == "entry" and len(names) == len(set(names)) == 8
    tokens = [t for _, ts in layers for t in ts]
    assert len(tokens) == len(set(tokens)), "a module listed in two layers"


def test_crlm_lib_calls_down_only_and_has_no_import_cycle():
    problems = layering_problems(ROOT / "crlm_lib", read_layers())
    assert not problems, "\n".join(problems)


def test_every_layer_token_names_a_module():
    modules, _ = scan_imports(ROOT / "crlm_lib")
    rel = {m.removeprefix("crlm_lib.") for m in modules} | {"crlm_lib"}
    for _, tokens in read_layers():
        for token in tokens:
            stem = token.removesuffix(".*")
            assert stem in rel, f"docs/design.md names {token}, which is no module of crlm_lib"


# --------------------------------------------------------------------------------------------
# the checker can fail
# --------------------------------------------------------------------------------------------

SYNTHETIC_LAYERS = [("low", ["pkg", "low", "sub.*"]), ("high", ["high", "other"])]


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_checker_passes_a_clean_package(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "low.py": "import json\n",
            "high.py": "from pkg import low\nfrom .sub import leaf\n",
            "other.py": "def f():\n    from pkg.high import g\n",
            "sub/__init__.py": "from pkg.sub.leaf import x\n",
            "sub/leaf.py": "from pkg.low import y\nx = 1\n",
        },
    )
    assert layering_problems(pkg, SYNTHETIC_LAYERS) == []


def test_checker_finds_a_function_local_back_import_and_its_cycle(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "low.py": "def f():\n    from pkg import high  # back up\n",
            "high.py": "from pkg.low import f\n",
        },
    )
    problems = layering_problems(pkg, SYNTHETIC_LAYERS)
    assert any("pkg/low.py:2: function-local import of pkg.high (high)" in p for p in problems)
    assert "import cycle: pkg.high <-> pkg.low" in problems


def test_checker_resolves_relative_imports(tmp_path):
    pkg = _package(tmp_path, {"low.py": "from . import other\n", "other.py": ""})
    assert layering_problems(pkg, SYNTHETIC_LAYERS) == [
        "pkg/low.py:1: import of pkg.other (high) from pkg.low (low) calls up the layers"
    ]


def test_checker_finds_a_cycle_inside_one_layer(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "high.py": "def f():\n    import pkg.other\n",
            "other.py": "def g():\n    from pkg.high import f\n",
        },
    )
    assert layering_problems(pkg, SYNTHETIC_LAYERS) == ["import cycle: pkg.high <-> pkg.other"]


def test_checker_counts_the_package_init_a_submodule_import_runs(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "sub/__init__.py": "from pkg.sub import leaf\n",
            "sub/leaf.py": "import pkg.sub.x\n",
            "sub/x.py": "def h():\n    from pkg.low import y\n",
            "low.py": "def k():\n    from pkg.sub.leaf import z\n",
        },
    )
    # pkg.low imports pkg.sub.leaf: that runs pkg.sub's __init__ first, part of the cycle
    assert layering_problems(pkg, SYNTHETIC_LAYERS) == [
        "import cycle: pkg.low <-> pkg.sub <-> pkg.sub.leaf <-> pkg.sub.x"
    ]


def test_checker_ignores_type_checking_imports_and_names_unlayered_modules(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.high import T\n",
            "high.py": "from pkg import low\n",
            "stray.py": "",
        },
    )
    assert layering_problems(pkg, SYNTHETIC_LAYERS) == ["pkg.stray: no layer in docs/design.md"]


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("config.py", "\n\ndef _planted():\n    from crlm_lib import cli\n"),
        ("data/dataset.py", "\n\ndef _planted():\n    from crlm_lib.metrics import softmax\n"),
    ],
)
def test_a_planted_back_import_in_a_copy_of_crlm_lib_fails(tmp_path, module, planted):
    copy = tmp_path / "crlm_lib"
    shutil.copytree(ROOT / "crlm_lib", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layering_problems(copy, read_layers()) == []
    with (copy / module).open("a") as fh:
        fh.write(planted)
    problems = layering_problems(copy, read_layers())
    assert any("function-local import" in p and "calls up the layers" in p for p in problems)
