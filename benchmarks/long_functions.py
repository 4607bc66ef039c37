"""List the functions of ``crlm_lib`` longer than a threshold (an ``ast`` walk).

A function's length is its code in lines: ``def`` (decorators included) to its last line, less
the docstring (numpy docstrings are required here and say nothing about complexity); ``--span``
counts the docstring too. Functions
whose docstring says why they stay long (it contains ``Long on purpose``) are marked ``kept``.

    python benchmarks/long_functions.py                 # > 80 lines, whole library
    python benchmarks/long_functions.py --min-lines 60 crlm_lib/train.py
    python benchmarks/long_functions.py --exclude crlm_lib/evaluation/protocols.py --exclude crlm_lib/cli.py

Exit status 0; the table goes to stdout (``lines  kept  file:line  qualified name``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

KEEP_MARK = "Long on purpose"


def long_functions(
    path: Path, min_lines: int, span: bool = False
) -> Iterator[tuple[int, bool, int, str]]:
    """``(lines, kept, first line, qualified name)`` of every function of ``path`` longer
    than ``min_lines`` (nested functions and methods included, named ``outer.inner``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[int, bool, int, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    n = child.end_lineno - start + 1
                    body0 = child.body[0]
                    has_doc = isinstance(body0, ast.Expr) and isinstance(
                        getattr(body0, "value", None), ast.Constant
                    )
                    if has_doc and isinstance(body0.value.value, str) and not span:
                        n -= body0.end_lineno - body0.lineno + 1
                    if n > min_lines:
                        kept = KEEP_MARK in (ast.get_docstring(child) or "")
                        yield n, kept, child.lineno, name
                yield from walk(child, f"{name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["crlm_lib"], help="files or folders")
    parser.add_argument("--min-lines", type=int, default=80)
    parser.add_argument("--exclude", action="append", default=[], help="file to skip")
    parser.add_argument("--span", action="store_true", help="count the docstring too")
    args = parser.parse_args(argv)
    excluded = {Path(p).resolve() for p in args.exclude}
    files: list[Path] = []
    for p in map(Path, args.paths):
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    rows = []
    for f in files:
        if f.resolve() in excluded:
            continue
        rows.extend(
            (n, kept, f"{f}:{line}", name)
            for n, kept, line, name in long_functions(f, args.min_lines, args.span)
        )
    for n, kept, where, name in sorted(rows, reverse=True):
        print(f"{n:5d}  {'kept' if kept else '    '}  {where}  {name}")
    print(f"{len(rows)} functions over {args.min_lines} lines ({sum(r[1] for r in rows)} kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
