"""``docs/interfaces.md`` names only what the code has.

Every inline code span of the page is read (spans may wrap across lines) and checked by one of
three rules; a span that none of them covers (a column name, a shape, a file layout) is prose:

A. a call, ``name(arg, key=default, ...) -> ...``, where ``name`` is a dotted Python name: the
   name must resolve, and every argument named in the parentheses (the leading identifier of
   each top-level, comma-separated part; ``*args`` / ``**options`` included, literal values
   such as ``"smoke"|"cpu"`` and ``...`` skipped) must be a parameter of
   ``inspect.signature(name)``;
B. a dotted name without a call whose first part is ``crlm_lib`` or one of its modules
   (``clinical.outcomes``, ``preprocess.USABLE_STATUSES``): it must resolve;
C. a bare ``ALL_CAPS`` or ``CamelCase`` name (``MASK_NAMES``, ``Patient``) outside the
   data-layout section: it must be defined in the section's module, in a module that the same
   section names by rule A or B, or be a built-in (``FileNotFoundError``).

Names resolve against, in turn: the module named in the section's heading
(``## Data — `crlm_lib.data` ``), ``crlm_lib`` and ``crlm_lib.data``, importing submodules as
needed. Removing or renaming a documented function, class, constant or parameter fails here.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

INTERFACES = Path(__file__).resolve().parents[1] / "docs" / "interfaces.md"

#: Sections that describe file layouts and labels, not code: rule C does not apply there.
LAYOUT_SECTIONS = ("Raw cohort layout",)
#: Calls the page shows that are not ``crlm_lib``'s to check here, and why.
NOT_CHECKED_HERE = {
    "forward": "the nn.Module method of every model (tests/models/test_registry.py)",
    "np.asarray": "numpy's, applied to a crlm_lib object in the text",
}
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_CALL = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*)\((.*?)\)(?:\.|\s*->|$)")
_BARE = re.compile(r"^(?:[A-Z][A-Z0-9_]+|[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+|[A-Z][a-z]+)$")


def _sections(text: str) -> list[tuple[str, list[str], str]]:
    """``(heading, modules named in the heading, body)`` of every ``##`` section."""
    out = []
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        modules = re.findall(r"`(crlm_lib(?:\.\w+)*)`", heading)
        out.append((heading.strip(), modules, body))
    return out


def _spans(body: str) -> list[str]:
    """Inline code spans (``x`` or ````x````), whitespace and line breaks collapsed."""
    return [" ".join(s.split()) for _, s in re.findall(r"(`+)(.+?)(?<!`)\1(?!`)", body, re.S)]


def _resolve(dotted: str, bases: list[str]):
    """The object ``dotted`` names under the first base where it exists, else None."""
    if dotted.startswith("crlm_lib."):
        bases = [""]  # already absolute
    for base in bases:
        parts = (f"{base}.{dotted}" if base else dotted).split(".")
        obj = None
        for i in range(len(parts), 0, -1):  # the longest importable module prefix
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            rest = parts[i:]
            break
        if obj is None:
            continue
        try:
            for name in rest:
                obj = getattr(obj, name)
        except AttributeError:
            continue
        return obj
    return None


def _split_top_level(args: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in args:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur] if cur.strip() else parts


def _argument_names(args: str) -> list[str]:
    names = []
    for part in _split_top_level(args):
        m = re.match(rf"\s*(\*{{0,2}})({_IDENT})", part)
        if m:
            names.append(m.group(2))
    return names


def _is_module_head(head: str) -> bool:
    """``crlm_lib`` itself, or a module of it (``clinical`` is ``crlm_lib.data.clinical``)."""
    return head == "crlm_lib" or inspect.ismodule(_resolve(head, ["crlm_lib", "crlm_lib.data"]))


def documented() -> list[tuple[str, str, str, list[str], list[str]]]:
    """``(rule, section, name, bases, argument names)`` of every checked span."""
    items = []
    for heading, modules, body in _sections(INTERFACES.read_text(encoding="utf-8")):
        bases = [*modules, "crlm_lib", "crlm_lib.data"]
        named_modules: list[str] = []
        bare: list[str] = []
        for span in _spans(body):
            call = _CALL.match(span)
            if call:
                name, args = call.groups()
                items.append(("A", heading, name, bases, _argument_names(args)))
                named_modules.append(name.rsplit(".", 1)[0] if "." in name else "")
            elif _DOTTED.fullmatch(span) and "." in span and _is_module_head(span.split(".")[0]):
                items.append(("B", heading, span, bases, []))
                named_modules.append(span.rsplit(".", 1)[0])
            elif _BARE.match(span) and not heading.startswith(LAYOUT_SECTIONS):
                bare.append(span)
        # rule C: the section's own modules first
        own = []
        for prefix in filter(None, named_modules):
            for base in bases:
                obj = _resolve(prefix, [base])
                if inspect.ismodule(obj):
                    own.append(obj.__name__)
                    break
        for name in bare:
            items.append(("C", heading, name, [*bases, *dict.fromkeys(own), "builtins"], []))
    return items


ITEMS = documented()


def test_the_page_documents_a_reasonable_number_of_names():
    rules = [rule for rule, *_ in ITEMS]
    assert rules.count("A") >= 25 and rules.count("B") >= 10 and rules.count("C") >= 10, rules


@pytest.mark.parametrize(
    "rule, section, name, bases, args", ITEMS, ids=[f"{r}-{n}" for r, _, n, _, _ in ITEMS]
)
def test_documented_name_exists(rule, section, name, bases, args):
    if rule == "A" and name in NOT_CHECKED_HERE:
        return
    obj = _resolve(name, bases)
    assert obj is not None, f"docs/interfaces.md ({section}): `{name}` not found under {bases}"
    if rule != "A" or not args:
        return
    params = inspect.signature(obj).parameters
    missing = [a for a in args if a not in params]
    assert not missing, (
        f"docs/interfaces.md ({section}): `{name}` has no parameter(s) {missing}; "
        f"its signature is {inspect.signature(obj)}"
    )


def test_a_removed_name_or_parameter_is_caught():
    """The rules catch what they are for: a name that does not exist, a parameter it lacks."""
    assert _resolve("data.dataset.no_such_split", ["crlm_lib"]) is None
    assert _resolve("dataset.repeated_stratified_kfold", ["crlm_lib.data"]) is not None
    call = _CALL.match("dataset.paper_split(ids, events, seed, shuffle=True) -> (train, val)")
    assert call and _argument_names(call.group(2)) == ["ids", "events", "seed", "shuffle"]
    assert _argument_names('"smoke"|"cpu"|"paper"') == []
    assert _argument_names("heatmaps [Y, D, H, W], meta, **options, ...") == [
        "heatmaps",
        "meta",
        "options",
    ]


def test_citation_file_parses_and_matches_the_package():
    """CITATION.cff is YAML with the package's version and licence (CFF 1.2.0 fields)."""
    import tomllib

    import yaml

    root = INTERFACES.parents[1]
    cff = yaml.safe_load((root / "CITATION.cff").read_text(encoding="utf-8"))
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == project["version"] and cff["license"] == project["license"]
    assert cff["authors"] == [{"name": "The crlm_lib authors"}]
    dois = {r.get("doi") for r in cff["references"]}
    assert {"10.7937/QXK2-QG03", "10.1038/s41597-024-02981-2"} <= dois
    assert "MIT License" in (root / "LICENSE").read_text(encoding="utf-8")
