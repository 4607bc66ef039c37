"""The article ``paper/index.qmd`` against what it embeds, cites and checks off.

Every figure and table it embeds is cross-referenced in its text; every TRIPOD+AI item carries
its official number (Collins et al., BMJ 2024) and points to a section that exists; every entry
of ``paper/references.bib`` is cited. Pure text checks: nothing is rendered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from crlm_lib import evaluation as ev
from crlm_lib.manuscript import cell_options

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = ROOT / "paper" / "index.qmd"
BIB = ROOT / "paper" / "references.bib"

#: The TRIPOD+AI checklist's items as numbered in Collins et al. (BMJ 2024;385:e078378),
#: Table 1: 27 items, 52 sub-items.
TRIPOD_AI_ITEMS: tuple[str, ...] = (
    *("1", "2", "3a", "3b", "3c", "4", "5a", "5b", "6a", "6b", "6c", "7"),
    *("8a", "8b", "8c", "9a", "9b", "9c", "10", "11"),
    *("12a", "12b", "12c", "12d", "12e", "12f", "12g", "13", "14", "15", "16", "17"),
    *("18a", "18b", "18c", "18d", "18e", "18f", "19", "20a", "20b", "20c", "21", "22"),
    *("23a", "23b", "24", "25", "26", "27a", "27b", "27c"),
)


def _article_text() -> str:
    text = ARTICLE.read_text(encoding="utf-8")
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def _embedded_floats(text: str) -> list[str]:
    labels = re.findall(r"\{\{<\s*embed\s+\S+?#((?:fig|tbl)-[\w-]+)", text)
    labels += re.findall(r"\{#((?:fig|tbl)-[\w-]+)[^}]*\}", text)
    return list(dict.fromkeys(labels))


def unreferenced_floats(text: str) -> list[str]:
    """Figures and tables of an article (embedded or written in it) that no ``@label``
    cross-reference names."""
    refs = set(re.findall(r"(?<![\w@.])@((?:fig|tbl)-[\w-]*\w)", text))
    return [label for label in _embedded_floats(text) if label not in refs]


def undefined_references(text: str) -> list[str]:
    """``@fig-``/``@tbl-`` cross-references of an article that name no float it embeds or
    writes (the renderer would print them as unresolved)."""
    refs = re.findall(r"(?<![\w@.])@((?:fig|tbl)-[\w-]*\w)", text)
    defined = set(_embedded_floats(text)) | set(
        re.findall(r"#\| label: ((?:fig|tbl)-[\w-]+)", text)
    )
    return [r for r in dict.fromkeys(refs) if r not in defined]


def test_undefined_references_are_found():
    text = "{{< embed ../nb.ipynb#fig-a >}}\nSee @fig-a and @tbl-b."
    assert undefined_references(text) == ["tbl-b"]


def test_every_cross_reference_names_an_embedded_float():
    missing = undefined_references(_article_text())
    assert missing == [], f"cross-referenced but never embedded in {ARTICLE.name}: {missing}"


def test_the_abstract_cross_references_nothing():
    """The abstract sits in the front matter, where the offline renderer (Typst) resolves no
    cross-reference: an ``@fig-``/``@tbl-``/``@sec-`` there fails the render."""
    front = _article_text().split("\n---", 1)[0]
    abstract = front.split("abstract:", 1)[1]
    assert re.findall(r"@(?:fig|tbl|sec)-[\w-]+", abstract) == []


def test_unreferenced_floats_are_found():
    text = "{{< embed ../nb.ipynb#fig-a >}}\n{{< embed ../nb.ipynb#tbl-b >}}\nSee @fig-a."
    assert unreferenced_floats(text) == ["tbl-b"]
    assert unreferenced_floats(text + " And @tbl-b.") == []


def test_every_figure_and_table_is_cross_referenced():
    missing = unreferenced_floats(_article_text())
    assert missing == [], f"never cross-referenced in {ARTICLE.name}: {missing}"


def test_tripod_items_follow_the_official_numbering():
    assert tuple(ev.tripod_checklist().index) == TRIPOD_AI_ITEMS
    assert len(TRIPOD_AI_ITEMS) == 52
    assert len({re.match(r"\d+", item).group(0) for item in TRIPOD_AI_ITEMS}) == 27


def test_tripod_items_point_to_sections_that_exist():
    ids = set(re.findall(r"\{#(sec-[\w-]+)[^}]*\}", _article_text()))
    for item, _, where, section in ev.TRIPOD_AI:
        if section:
            assert section in ids, f"TRIPOD+AI item {item} points to missing {section}"
        else:  # no section: the row says why the item is not met, or names title / abstract
            assert re.match(r"(Not |None|Title|Abstract)", where), (item, where)
    table = ev.tripod_checklist()
    assert set(table["section"]) - {""} <= {f"@{i}" for i in ids}


def _cited_keys() -> set[str]:
    """Citation keys of the article and of the captions of the notebooks it embeds."""
    text = _article_text()
    for nb_path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                opts = cell_options("".join(cell["source"]))
                text += " " + str(opts.get("tbl-cap", "")) + " " + str(opts.get("fig-cap", ""))
    return set(re.findall(r"(?<![\w.])@([\w:.-]*\w)", text))


def test_every_bibliography_entry_is_cited():
    keys = re.findall(r"^@\w+\{([^,]+),", BIB.read_text(encoding="utf-8"), re.M)
    assert keys, BIB
    uncited = sorted(set(keys) - _cited_keys())
    assert uncited == [], f"entries of {BIB.name} never cited: {uncited}"


def test_methods_the_text_relies_on_are_cited():
    cited = _cited_keys()
    for key in (
        "selvaraju2017gradcam",
        "lundberg2017shap",
        "collins2024tripodai",
        "adebayo2018sanity",
        "yang2025dypro",
    ):
        assert key in cited, key
