"""Every function of ``crlm_lib`` stays small enough to read: at most ``MAX_PARAMETERS``
parameters and at most ``MAX_CODE_LINES`` lines of code.

Parameters: positional-only, ordinary and keyword-only ones; ``*args`` / ``**kwargs`` and a
method's ``self`` / ``cls`` are not counted. A function with more settings takes them as one
frozen dataclass (``ProtocolOptions``, ``PreprocessOptions`` ...; ``config.with_options``
keeps the fields available as keywords). Code lines: the lines from ``def`` to the function's
last line that are neither blank, nor only a comment, nor part of its docstring (a nested
function's lines count for the function around it too). The scan is ``ast``'s, so the test
needs no import of the library.

An exception needs a line in ``ALLOWED`` with its reason; an entry whose function no longer
breaks a limit fails the test, so the list cannot outlive its reasons.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "crlm_lib"
MAX_PARAMETERS = 8
MAX_CODE_LINES = 60

#: Functions allowed past a limit, ``"<path under crlm_lib>:<qualified name>"`` -> why.
#: Empty: every function of the library fits.
ALLOWED: dict[str, str] = {}

Function = ast.FunctionDef | ast.AsyncFunctionDef


def parameter_count(fn: Function) -> int:
    """Named parameters of ``fn``, less a leading ``self`` / ``cls``."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    n = len(positional) + len(a.kwonlyargs)
    if positional and positional[0].arg in ("self", "cls"):
        n -= 1
    return n


def code_lines(fn: Function, lines: list[str]) -> int:
    """Lines of ``fn`` (``def`` to its end; ``lines`` is its file) that hold code: not
    blank, not only a comment, not its docstring."""
    skip: set[int] = set()
    first = fn.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        skip = set(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number in range(fn.lineno, fn.end_lineno + 1)
        if number not in skip
        and lines[number - 1].strip()
        and not lines[number - 1].strip().startswith("#")
    )


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, Function]]:
    """``(qualified name, node)`` of every function of ``tree``, methods and nested ones
    included (``Class.method``, ``outer.inner``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, f"{name}.")
        else:
            yield from _functions(node, prefix)


def oversized(path: Path, root: Path) -> dict[str, str]:
    """``{"<path under root>:<qualified name>": "line N: ... "}`` for every function of the
    file ``path`` past a limit."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = {}
    for name, fn in _functions(ast.parse(text, filename=str(path))):
        params, code = parameter_count(fn), code_lines(fn, lines)
        if params > MAX_PARAMETERS or code > MAX_CODE_LINES:
            key = f"{path.relative_to(root).as_posix()}:{name}"
            out[key] = f"line {fn.lineno}: {params} parameters, {code} code lines"
    return out


def scan(root: Path) -> dict[str, str]:
    """:func:`oversized` over every ``.py`` file under ``root``."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        found.update(oversized(path, root))
    return found


def test_every_function_fits_or_is_allowed_with_a_reason():
    found = scan(PACKAGE)
    unexplained = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not unexplained, (
        f"over {MAX_PARAMETERS} parameters or {MAX_CODE_LINES} code lines (group settings in "
        "an options dataclass, split long functions along their steps, or add the function "
        f"to ALLOWED with its reason): {unexplained}"
    )
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"ALLOWED names functions that now fit or no longer exist: {stale}"
    assert all(reason.strip() for reason in ALLOWED.values()), "every exception needs a reason"


_PLANTED = '''
import functools


def fine(a, b, c, d, e, f, g, h, *args, **kwargs):
    """Eight named parameters: the limit itself.

    A docstring this long does not count.
    """
    # nor do comments

    return a


def too_many(a, b, c, d, e, f, g, h, i):
    return a


class Model:
    def method(self, a, b, c, d, e, f, g, h):
        return a

    @classmethod
    def build(cls, a, b, c, d, e, f, g, h, *, i=0):
        return cls


@functools.cache
def long_one(x):
    """Doc."""
{body}


def outer():
    def inner(a, b, c, d, e, f, g, h, i):
        return a

    return inner
'''


def test_scan_flags_planted_functions(tmp_path):
    """A module with known offenders: exactly they are found, with their counts (the scan
    of the library above cannot pass by finding nothing)."""
    body = "\n".join(f"    x = x + {k}  # one code line" for k in range(59)) + "\n    return x"
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "planted.py").write_text(_PLANTED.format(body=body), encoding="utf-8")
    found = scan(package)
    assert found == {
        "planted.py:too_many": "line 15: 9 parameters, 2 code lines",
        "planted.py:Model.build": "line 24: 9 parameters, 2 code lines",
        "planted.py:long_one": "line 29: 1 parameters, 61 code lines",
        "planted.py:outer.inner": "line 94: 9 parameters, 2 code lines",
    }
    # one line fewer and the long function is at the limit: it fits
    shorter = body.split("\n", 1)[1]
    (package / "planted.py").write_text(_PLANTED.format(body=shorter), encoding="utf-8")
    assert "planted.py:long_one" not in scan(package)
