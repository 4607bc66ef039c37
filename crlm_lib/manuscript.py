"""Render the manuscript: Quarto when installed, else an offline pandoc/Typst approximation.

The manuscript is a Quarto *manuscript project* (``_quarto.yml`` at the repo root, article
``paper/index.qmd``) whose figures, tables and quoted numbers are all embedded from the
**executed** notebooks (``notebooks/executed/<tag>/``, written by papermill; ``tag`` is the
profile name, or ``<profile>-real`` for the real cohort). Nothing is re-executed
(``execute: enabled: false``).

Conventions the article follows (and both renderers honour)
-----------------------------------------------------------
* Embed paths are **relative to the article's folder**, as in Quarto (its ``resolveNbPath``
  joins ``dirname(article)`` and the path): from ``paper/index.qmd`` write
  ``{{< embed ../notebooks/03_ablations.ipynb#tbl-ablation >}}``.
* Labels say what a cell makes: ``fig-*`` (a PNG, caption from ``#| fig-cap:``), ``tbl-*``
  (a DataFrame shown as HTML or Markdown, caption from ``#| tbl-cap:``), ``val-*`` (a scalar
  shown as text/markdown or text/plain, embedded *inline* in a sentence). Other labels embed
  their outputs without a number.
* Cross-references ``@fig-x``, ``@tbl-x``, ``@sec-x`` and citations ``[@key]`` / ``@key``
  from ``paper/references.bib``.
* Named inline values ``{{< value name >}}`` (usable in the front matter too, e.g. the
  abstract, where an embed cannot go): a notebook cell labelled ``values-*`` displays a JSON
  object ``{name: text}`` (mime ``application/json``, :func:`crlm_lib.reporting.show_values`),
  a glue-like record of the build's numbers. :func:`collect_values` gathers them from every
  staged notebook; the offline renderer substitutes them; for Quarto, :func:`stage` writes
  them to ``values.json`` beside ``_quarto.yml`` and copies the ``value`` shortcode extension
  (``_extensions/value/value.lua``) that reads it. An unknown name is an :class:`EmbedError`.

Staging and output
------------------
:func:`render` copies ``_quarto.yml``, ``paper/`` and the executed notebooks (into
``notebooks/`` of the stage, the paths the article names) to ``build/manuscript-<tag>/``,
removes notebook metadata and papermill's injected-parameters cell there (they can hold local
paths), renders, and moves the site to ``_manuscript/<tag>/`` (``index.html``, ``index.pdf``,
``figures/``, ``notebooks/``). One folder per tag, so that smoke, cpu and real-data renders
never overwrite each other.

The offline renderer (an approximation of Quarto, stated in the output)
----------------------------------------------------------------------
Quarto is pandoc plus Lua filters; here the filters are replaced by a text pre-pass over the
article's Markdown: (1) front matter is normalised to pandoc metadata (author names only),
(2) ``embed`` shortcodes are replaced by Markdown made from the labelled cell's outputs only
(never its source, never any metadata; PNGs are re-encoded with Pillow so that no text chunk
survives), (3) figures, tables and sections are numbered in order of appearance and
``@fig-``/``@tbl-``/``@sec-`` references become links "Figure N"/"Table N"/"Section N", with
captions prefixed "Figure N:"/"Table N:". pandoc then resolves citations (``--citeproc``) and
writes standalone HTML (``--mathml``: no network needed) and Typst, which the ``typst`` wheel
compiles to PDF. A PDF failure is reported and the HTML kept. Notebook pages show markdown
cells and outputs (code is omitted: it lives in the repository, and papermill's cells can hold
paths). Differences from Quarto: no layout panels or sub-figures (only the first PNG of a
figure cell), no margin content, no Quarto HTML theme, unknown shortcodes dropped with a
warning, unresolved references shown as ``?@label`` (as Quarto does).
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from crlm_lib.errors import CRLMUserError

OFFLINE_NOTE = "Rendered offline with the pandoc/Typst fallback; Quarto was not available."
_COLOPHON = (
    "Figures, tables and numbers are embedded from the executed notebooks as Quarto would; "
    "layout details differ."
)
NOTEBOOKS: tuple[str, ...] = (
    "01_preprocess.ipynb",
    "02_train_4d_acfnet.ipynb",
    "03_ablations.ipynb",
    "04_comparisons.ipynb",
    "05_interpretability.ipynb",
    "06_evaluation.ipynb",
)
_KIND_NAME = {"fig": "Figure", "tbl": "Table", "sec": "Section", "eq": "Equation"}
_EMBED_RE = re.compile(
    r"\{\{<\s*embed\s+\"?(?P<path>[^\s#\"]+)#(?P<label>[\w.-]+)\"?(?P<opts>[^>]*)>\}\}"
)
_VALUE_RE = re.compile(r"\{\{<\s*value\s+\"?(?P<name>[\w.-]+)\"?\s*>\}\}")
_SHORTCODE_RE = re.compile(r"\{\{<\s*(?P<name>[\w-]+)[^>]*>\}\}")
_XREF_RE = re.compile(r"(?<![\w@.])@(?P<label>(?:fig|tbl|sec|eq)-[\w-]*\w)")
_NATIVE_FIG_RE = re.compile(
    r"!\[(?P<cap>[^\]]*)\]\((?P<src>[^)]*)\)\{#(?P<label>fig-[\w-]+)(?P<rest>[^}]*)\}"
)
_NATIVE_TBL_RE = re.compile(
    r"^:(?!:)[ \t]*(?P<cap>.*?)[ \t]*\{#(?P<label>tbl-[\w-]+)\}[ \t]*$", re.M
)
_HEADING_RE = re.compile(
    r"^(?P<hashes>#{1,6})[ \t]+(?P<text>.*?)[ \t]*(?:\{(?P<attrs>[^}\n]*)\})?[ \t]*$", re.M
)
_FENCE_RE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
_CSS = """<style>
body{max-width:46em;margin:auto;padding:1em 1.5em;font:17px/1.55 Georgia,serif;color:#222}
h1,h2,h3{font-family:Helvetica,Arial,sans-serif;line-height:1.25}
figure{margin:1.5em 0;text-align:center}figure img{max-width:100%}
figcaption,caption{font-size:.9em;color:#444;text-align:left;margin:.4em 0}
table{border-collapse:collapse;margin:1em auto;font-size:.85em}
th,td{border-bottom:1px solid #ccc;padding:.25em .6em;text-align:right}
thead th{border-bottom:2px solid #444}
div[id^="tbl-"]{overflow-x:auto}
.colophon{border-top:1px solid #ccc;margin-top:2em;padding-top:.6em;
font:14px/1.4 Helvetica,Arial,sans-serif;color:#444}
.embed-source{display:block;font-size:.8em;color:#666;text-align:right}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
</style>
"""


class ManuscriptError(RuntimeError):
    """The manuscript could not be rendered (message names the file and what to do)."""


class MissingNotebookError(ManuscriptError, CRLMUserError):
    """An executed notebook the manuscript needs is missing: the notebooks were not run for
    this profile yet, a step the user runs first (``crlm`` prints it in one line, exit 2)."""


class EmbedError(ManuscriptError):
    """An ``embed`` shortcode names a notebook or cell label that does not exist."""


# ----------------------------------------------------------------------------- notebooks
def cell_options(source: str) -> dict[str, Any]:
    """Quarto cell options: the leading ``#| key: value`` lines of a code cell, as YAML."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("#|"):
            break
        lines.append(line[2:].removeprefix(" "))
    try:
        opts = yaml.safe_load("\n".join(lines)) if lines else {}
    except yaml.YAMLError as err:
        raise ManuscriptError(f"cell options are not valid YAML: {lines!r}: {err}") from err
    return opts if isinstance(opts, dict) else {}


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def find_labelled_cell(nb: dict, label: str, nb_path: Path | str = "") -> dict:
    """The code cell whose ``#| label:`` equals ``label``; :class:`EmbedError` if none."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and cell_options(_source(cell)).get("label") == label:
            return cell
    raise EmbedError(f"{nb_path}: no code cell with '#| label: {label}'")


def sanitize_notebook(nb: dict) -> dict:
    """A copy without notebook/cell/output metadata and without papermill's parameters cell.

    Notebook metadata (papermill's ``parameters``, ``input_path``), cell metadata and the
    ``injected-parameters`` cell can hold local paths such as ``data_dir``; only the kernel
    language is kept so that Quarto can still read the file.
    """
    out = copy.deepcopy(nb)
    lang = out.get("metadata", {}).get("language_info", {}).get("name", "python")
    kernel = out.get("metadata", {}).get("kernelspec", {})
    out["metadata"] = {
        "kernelspec": {
            k: kernel.get(k, "python3" if k == "name" else "Python 3")
            for k in ("name", "display_name")
        }
        | {"language": lang},
        "language_info": {"name": lang},
    }
    cells = []
    for cell in out.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        cell["metadata"] = {}
        cell.pop("attachments", None)
        for output in cell.get("outputs", []):
            if "metadata" in output:
                output["metadata"] = {}
        cells.append(cell)
    out["cells"] = cells
    return out


def _text(data: Any) -> str:
    return "".join(data) if isinstance(data, list) else str(data)


def _html_to_markdown(html_text: str) -> str:
    """An HTML table as a Markdown *pipe* table: one line per row, so that rewriting a cell
    (a cross-reference becoming a link) cannot shift the columns of an aligned table."""
    import pypandoc

    html_text = re.sub(r"<style.*?</style>", "", html_text, flags=re.S | re.I)  # pandas' CSS
    return pypandoc.convert_text(
        html_text,
        "markdown-simple_tables-multiline_tables-grid_tables",
        format="html-native_divs-native_spans",
        extra_args=["--wrap=none"],
    )


def _write_png(b64: str, path: Path) -> None:
    """Decode and re-encode a PNG with Pillow, which drops every text/metadata chunk."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(base64.b64decode(_text(b64)))) as im:
        im.load()
        im.save(path, format="PNG")


class _Site:
    """Writes embedded figures into ``<site>/figures`` and remembers names."""

    def __init__(self, site_dir: Path):
        self.site_dir = site_dir
        self.fig_dir = site_dir / "figures"

    def png(self, b64: str, name: str) -> str:
        _write_png(b64, self.fig_dir / f"{name}.png")
        return f"figures/{name}.png"


def _outputs(cell: dict) -> list[tuple[str, Any]]:
    """(mime, data) of a cell's outputs, best representation first; stderr dropped."""
    found = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            for mime in ("image/png", "text/markdown", "text/html", "text/plain"):
                if mime in data:
                    found.append((mime, data[mime]))
                    break
        elif kind == "stream" and out.get("name") == "stdout":
            found.append(("stream", _text(out.get("text", ""))))
        elif kind == "error":
            found.append(("stream", f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"))
    return found


def _block_markdown(mime: str, data: Any, site: _Site, name: str, prefix: str = "") -> str:
    if mime == "image/png":
        return f"![]({prefix}{site.png(data, name)})"
    if mime == "text/markdown":
        return _text(data)
    if mime == "text/html":
        text = _text(data)
        return _html_to_markdown(text) if "<table" in text else f"```{{=html}}\n{text}\n```"
    text = _text(data)
    return f"```\n{text.rstrip()}\n```"


def _inline_value(cell: dict, where: str) -> str:
    for mime, data in _outputs(cell):
        text = _text(data).strip()
        if mime == "text/plain" and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        if mime != "image/png" and text:
            return " ".join(text.split())
    raise EmbedError(f"{where}: the cell has no text output to embed inline")


def collect_values(notebooks: Sequence[Path | str]) -> dict[str, str]:
    """Named values of the ``values-*`` cells of executed notebooks (``application/json``).

    Raises
    ------
    ManuscriptError
        If two cells define the same name, or a ``values-*`` cell has no JSON object output.
    """
    values: dict[str, str] = {}
    where: dict[str, str] = {}
    for nb_path in notebooks:
        nb_path = Path(nb_path)
        if not nb_path.is_file():
            continue
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code":
                continue
            label = str(cell_options(_source(cell)).get("label", ""))
            if not label.startswith("values-"):
                continue
            found = [
                out["data"]["application/json"]
                for out in cell.get("outputs", [])
                if isinstance(out.get("data"), dict) and "application/json" in out["data"]
            ]
            if not found or not isinstance(found[-1], dict):
                raise ManuscriptError(f"{nb_path}: cell {label!r} has no JSON object output")
            for name, value in found[-1].items():
                if name in values:
                    raise ManuscriptError(
                        f"value {name!r} defined twice ({where[name]} and {nb_path.name}#{label})"
                    )
                values[name] = str(value)
                where[name] = f"{nb_path.name}#{label}"
    return values


def resolve_values(text: str, values: dict[str, str], where: str = "article") -> str:
    """Replace every ``{{< value name >}}`` of ``text``; :class:`EmbedError` for unknown names."""

    def value(m: re.Match) -> str:
        name = m.group("name")
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise EmbedError(f"{where}: no notebook value {name!r} (values-* cells give: {known})")
        return values[name]

    return _VALUE_RE.sub(value, text)


def _project_notebooks(project_dir: Path, manuscript: dict) -> list[Path]:
    listed = [(project_dir / n["notebook"]) for n in manuscript.get("notebooks", []) or []]
    found = sorted((project_dir / "notebooks").glob("*.ipynb"))
    return list(dict.fromkeys(p.resolve() for p in [*listed, *found]))


# ----------------------------------------------------------------------------- article pass
def _split_front_matter(text: str) -> tuple[dict, str]:
    m = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if not m:
        return {}, text
    return (yaml.safe_load(m.group(1)) or {}), text[m.end() :]


def _mask_code(text: str) -> tuple[str, list[str]]:
    """Replace fenced code blocks by placeholders so that no pass rewrites code."""
    kept: list[str] = []

    def keep(m: re.Match) -> str:
        kept.append(m.group(0))
        return f"\x00CODE{len(kept) - 1}\x00"

    return _FENCE_RE.sub(keep, text), kept


def _unmask_code(text: str, kept: list[str]) -> str:
    return re.sub(r"\x00CODE(\d+)\x00", lambda m: kept[int(m.group(1))], text)


def _number_floats(body: str) -> dict[str, str]:
    """Label -> number ("3", "2.1") for figures, tables and sections in order of appearance."""
    events: list[tuple[int, str, int]] = []  # (position, label, heading level or 0)
    for m in _EMBED_RE.finditer(body):
        if m.group("label").startswith(("fig-", "tbl-")):
            events.append((m.start(), m.group("label"), 0))
    for m in _NATIVE_FIG_RE.finditer(body):
        events.append((m.start(), m.group("label"), 0))
    for m in _NATIVE_TBL_RE.finditer(body):
        events.append((m.start(), m.group("label"), 0))
    headings = [
        m for m in _HEADING_RE.finditer(body) if "unnumbered" not in (m.group("attrs") or "")
    ]
    top = min((len(m.group("hashes")) for m in headings), default=1)
    for m in headings:
        ident = re.search(r"#([\w-]+)", m.group("attrs") or "")
        events.append(
            (m.start(), ident.group(1) if ident else "", len(m.group("hashes")) - top + 1)
        )
    numbers: dict[str, str] = {}
    counts = {"fig": 0, "tbl": 0}
    sec = [0] * 7
    for _, label, level in sorted(events):
        if level:
            sec[level - 1] += 1
            sec[level:] = [0] * (7 - level)
            if label.startswith("sec-"):
                numbers[label] = ".".join(str(n) for n in sec[:level])
            continue
        kind = label.split("-", 1)[0]
        if label in numbers:
            raise ManuscriptError(f"label {label!r} is defined twice in the article")
        counts[kind] += 1
        numbers[label] = str(counts[kind])
    return numbers


#: Characters of 8-point table text that fit across a portrait page of the PDF; a table whose
#: natural width (:func:`table_width_chars`) is larger is set on a landscape page.
PORTRAIT_CHARS = 110
#: Captions as their text only (the "Table N:" prefix is in it), never split across pages
#: and kept on the page of what follows them (a table's first rows).
_TYPST_CAPTION = "#show figure.caption: it => block(breakable: false, sticky: true, it.body)\n"
#: A landscape page for a wide table, with narrower side margins than the article's.
_LANDSCAPE = "#page(flipped: true, margin: (x: 0.6in, y: 1in))"
#: Longest cell, in characters, that counts at full length: a longer cell wraps in its column.
_CELL_WRAP_CHARS = 28
_TYPST_TABLE_RULES = """#show figure.where(kind: table): set block(breakable: true)
#show table: set text(size: 8pt)
#show table: set par(justify: false)
#set table(inset: (x: 3pt, y: 2.5pt))
"""


def _html_rows(html_text: str) -> list[list[str]]:
    """The text of every cell of every ``<tr>`` of an HTML table (tags stripped)."""
    rows = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", html_text, re.S | re.I):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S | re.I)
        rows.append([" ".join(html.unescape(re.sub(r"<[^>]+>", "", c)).split()) for c in cells])
    return rows


def table_width_chars(html_text: str) -> int:
    """Natural width of an HTML table in characters: per column the longest body cell (at
    most :data:`_CELL_WRAP_CHARS`, a longer one wraps) or the header's longest word, plus two
    characters of padding per column."""
    rows = _html_rows(html_text)
    if not rows:
        return 0
    widths: dict[int, int] = {}
    head = "<thead" in html_text.lower()
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            words = text.split() or [""]
            need = max(map(len, words)) if (head and r == 0) else min(len(text), _CELL_WRAP_CHARS)
            widths[c] = max(widths.get(c, 0), max(need, max(map(len, words))))
    return sum(widths.values()) + 2 * len(widths)


def _typst_layout(typ: str, shapes: dict[str, tuple[int, int]]) -> str:
    """Pandoc's Typst with the manuscript's table layout.

    Tables in 8-point text, left-aligned, columns sized by their content (pandoc's percentage
    widths squeeze cells until they overprint), free to break across pages (the header row
    repeats; the caption is kept whole and with the table by :data:`_TYPST_CAPTION`); a table
    wider than :data:`PORTRAIT_CHARS` on its own flipped (landscape) page. ``shapes``: label
    -> (width in characters, rows), from :func:`_resolve_embeds`.
    """
    typ = re.sub(
        r"columns: \(((?:[\d.]+%,?\s*)+)\)",
        lambda m: f"columns: {len(re.findall(r'%', m.group(1)))}",
        typ,
    )
    typ = re.sub(
        r"align: \(((?:auto,)+)\)", lambda m: f"align: ({'left,' * m.group(1).count(',')})", typ
    )
    for label, (width, _) in sorted(shapes.items()):
        end = typ.find(f"] <{label}>")
        start = typ.rfind("#block[\n#figure(", 0, end)
        if end < 0 or start < 0:
            continue
        if width > PORTRAIT_CHARS:
            stop = end + len(f"] <{label}>")
            typ = f"{typ[:start]}{_LANDSCAPE}[\n{typ[start:stop]}\n]{typ[stop:]}"
    return _TYPST_TABLE_RULES + typ


def _table_markdown(
    mime: str, data: Any, caption: str, site: _Site, label: str
) -> tuple[str, str, tuple[int, int]]:
    """A table output as Markdown: ``(table, caption, (width in characters, rows))`` (the
    shape is ``(0, 0)`` for a Markdown output).

    A pandas Styler caption (the data's provenance, see :mod:`crlm_lib.reporting`) joins the
    numbered ``caption`` in brackets: pandoc attaches one caption per table. Pandoc's escaped
    ``\\@`` in a cell is undone so that a cross-reference there stays one.
    """
    inner = ""
    if mime == "text/html":
        text = _text(data)
        m = re.search(r"<caption[^>]*>(.*?)</caption>", text, re.S | re.I)
        if m:
            inner = " ".join(re.sub(r"<[^>]+>", "", m.group(1)).split())
            data = text[: m.start()] + text[m.end() :]
    shape = (table_width_chars(_text(data)), len(_html_rows(_text(data))))
    table = _block_markdown(mime, data, site, label).strip("\n")
    table = re.sub(r"\\@((?:fig|tbl|sec|eq)-)", r"@\1", table)
    return table, (f"{caption} [{inner}]" if inner else caption), shape


def _resolve_embeds(
    body: str,
    article_dir: Path,
    site: _Site,
    numbers: dict[str, str],
    target: str,
    shapes: dict[str, tuple[int, int]] | None = None,
) -> tuple[str, set[Path]]:
    """Replace every ``embed`` shortcode by Markdown; each embedded table's width in
    characters (:func:`table_width_chars`) and rows go to ``shapes`` by label (the PDF's
    layout, :func:`_typst_layout`, reads them)."""
    cache: dict[Path, dict] = {}
    used: set[Path] = set()

    def load(path: Path, where: str) -> dict:
        if path not in cache:
            if not path.is_file():
                raise EmbedError(f"{where}: notebook {path} does not exist")
            cache[path] = json.loads(path.read_text(encoding="utf-8"))
        return cache[path]

    def embed(m: re.Match) -> str:
        rel, label = m.group("path"), m.group("label")
        where = f"embed {rel}#{label}"
        nb_path = (article_dir / rel).resolve()
        cell = find_labelled_cell(load(nb_path, where), label, nb_path)
        used.add(nb_path)
        if label.startswith("val-"):
            return _inline_value(cell, where)
        opts = cell_options(_source(cell))
        source_link = (
            f"\n\n[Source: {nb_path.stem}.ipynb](notebooks/{nb_path.stem}.html#{label}){{.embed-source}}"
            if target == "html"
            else ""
        )
        outs = _outputs(cell)
        if label.startswith("fig-"):
            pngs = [d for mime, d in outs if mime == "image/png"]
            if not pngs:
                raise EmbedError(f"{where}: cell {label!r} of {nb_path} has no image/png output")
            cap = f"Figure {numbers[label]}: {opts.get('fig-cap', '')}".rstrip(": ")
            src = site.png(pngs[0], f"{nb_path.stem}-{label}")
            return f"\n\n![{cap}]({src}){{#{label}}}{source_link}\n\n"
        if label.startswith("tbl-"):
            tables = [(mime, d) for mime, d in outs if mime in ("text/markdown", "text/html")]
            if not tables:
                raise EmbedError(f"{where}: cell {label!r} of {nb_path} has no HTML/Markdown table")
            cap = f"Table {numbers[label]}: {opts.get('tbl-cap', '')}".rstrip(": ")
            table, cap, shape = _table_markdown(*tables[0], cap, site, label)
            if shapes is not None:
                shapes[label] = shape
            return f"\n\n::: {{#{label}}}\n{table}\n\n: {cap}\n:::{source_link}\n\n"
        blocks = [
            _block_markdown(mime, d, site, f"{nb_path.stem}-{label}-{i}")
            for i, (mime, d) in enumerate(outs)
        ]
        return "\n\n" + "\n\n".join(blocks) + "\n\n"

    return _EMBED_RE.sub(embed, body), used


def _resolve_native_floats(body: str, numbers: dict[str, str]) -> str:
    """Prefix captions of figures/tables written in the article itself with their numbers."""

    def native_fig(m: re.Match) -> str:
        cap = f"Figure {numbers[m.group('label')]}: {m.group('cap')}".rstrip(": ")
        return f"![{cap}]({m.group('src')}){{#{m.group('label')}{m.group('rest')}}}"

    def native_tbl(m: re.Match) -> str:
        cap = f"Table {numbers[m.group('label')]}: {m.group('cap')}".rstrip(": ")
        return f": {cap} []{{#{m.group('label')}}}"

    body = _NATIVE_FIG_RE.sub(native_fig, body)
    return _NATIVE_TBL_RE.sub(native_tbl, body)


def _resolve_xrefs(body: str, numbers: dict[str, str]) -> str:
    """``@fig-x`` -> a link "Figure N" (``?@fig-x`` in bold, with a warning, when unknown)."""

    def xref(m: re.Match) -> str:
        label = m.group("label")
        if label not in numbers:
            warnings.warn(f"unresolved cross-reference @{label}", stacklevel=2)
            return f"**?@{label}**"
        return f"[{_KIND_NAME[label.split('-', 1)[0]]}&nbsp;{numbers[label]}](#{label})"

    return _XREF_RE.sub(xref, body)


def _drop_shortcodes(body: str) -> str:
    def drop(m: re.Match) -> str:
        if m.group("name") != "pagebreak":
            warnings.warn(f"offline renderer drops shortcode {m.group(0)!r}", stacklevel=2)
        return ""

    return _SHORTCODE_RE.sub(drop, body)


def _pandoc_metadata(meta: dict, project_meta: dict, project_dir: Path, article: Path) -> dict:
    """Front matter reduced to what pandoc's templates understand (author names as strings)."""
    out = {k: meta[k] for k in ("title", "subtitle", "abstract", "keywords", "lang") if k in meta}
    authors = meta.get("author", meta.get("authors", []))
    authors = authors if isinstance(authors, list) else [authors]
    names = []
    for a in authors:
        name = a.get("name", "") if isinstance(a, dict) else a
        if isinstance(name, dict):
            name = (
                name.get("literal")
                or " ".join(str(name.get(k, "")) for k in ("given", "family")).strip()
            )
        names.append(str(name))
    if names:
        out["author"] = names
    date = meta.get("date")
    if date in ("today", "now", "last-modified"):
        date = _dt.date.today().isoformat()
    if date:
        out["date"] = str(date)
    for key, base in (("bibliography", article.parent), ("csl", article.parent)):
        value = meta.get(key)
        if value is None and key in project_meta:
            value, base = project_meta[key], project_dir
        if value:
            vals = value if isinstance(value, list) else [value]
            out[key] = [str((base / v).resolve()) for v in vals]
    out["link-citations"] = True
    out["reference-section-title"] = meta.get("reference-section-title", "References")
    return out


# ----------------------------------------------------------------------------- offline render
def _pandoc(args: list[str], stdin: str, cwd: Path) -> str:
    import pypandoc

    proc = subprocess.run(
        [pypandoc.get_pandoc_path(), *args], input=stdin, capture_output=True, text=True, cwd=cwd
    )
    if proc.returncode:
        raise ManuscriptError(f"pandoc {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def _notebook_page(nb_path: Path, title: str, site: _Site) -> str:
    """Markdown for a notebook page: markdown cells and code-cell outputs, no code, no metadata."""
    nb = sanitize_notebook(json.loads(nb_path.read_text(encoding="utf-8")))
    parts = [
        f"---\ntitle: {json.dumps(title)}\n---\n",
        f"Outputs of the executed notebook `{nb_path.name}`; its code is in the repository "
        f"(`notebooks/{nb_path.name}`). [Back to the article](../index.html)\n",
    ]
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") == "markdown":
            parts.append(_source(cell))
        elif cell.get("cell_type") == "code":
            label = cell_options(_source(cell)).get("label")
            outs = _outputs(cell)
            if label:
                parts.append(f"[]{{#{label}}}")
            for k, (mime, d) in enumerate(outs):
                name = f"nb-{nb_path.stem}-{label or i}-{k}"
                parts.append(_block_markdown(mime, d, site, name, prefix="../"))
    return "\n\n".join(parts)


def _render_pdf(
    markdown: Callable[[str, dict], tuple[str, set[Path]]], common: list[str], site_dir: Path
) -> tuple[Path, str]:
    """``index.pdf`` through pandoc's Typst writer and the ``typst`` package: ``(path, "")``,
    or ``(path, error)`` with no file when Typst fails (the HTML is kept either way). Tables
    follow :func:`_typst_layout`; the offline note closes the document as its colophon."""
    pdf = site_dir / "index.pdf"
    pdf_error = ""
    try:
        import typst

        shapes: dict[str, tuple[int, int]] = {}
        typ_text, _ = markdown("typst", shapes)
        if not re.search(r"^:::+\s*\{#refs\b", typ_text, re.M):  # the references come first
            typ_text += "\n\n# References {.unnumbered}\n\n::: {#refs}\n:::\n"
        typ_text += f"\n\n# Colophon {{.unnumbered}}\n\n{OFFLINE_NOTE} {_COLOPHON}\n"
        typ = _pandoc([*common, "--to=typst", "--standalone"], typ_text, site_dir)
        typ = _typst_layout(typ, shapes)
        typ = typ.replace("#set par(", _TYPST_CAPTION + "#set par(", 1)
        if "#show figure.caption" not in typ:
            typ = _TYPST_CAPTION + typ
        typ_file = site_dir / "index.typ"
        typ_file.write_text(typ, encoding="utf-8")
        typst.compile(str(typ_file), output=str(pdf), root=str(site_dir))
        typ_file.unlink()
    except Exception as err:  # noqa: BLE001 - any Typst failure must not lose the HTML
        pdf_error = f"{type(err).__name__}: {err}"
        print(f"PDF (Typst) failed, HTML kept: {pdf_error}", file=sys.stderr)
        pdf.unlink(missing_ok=True)
    return pdf, pdf_error


def _notebook_pages(
    project_dir: Path, manuscript: dict, used: set[Path], site: _Site, site_dir: Path
) -> list[str]:
    """``notebooks/<name>.html`` for the notebooks listed in ``_quarto.yml`` plus any embedded
    one; returns their HTML links."""
    listed = [
        (project_dir / n["notebook"]).resolve() for n in manuscript.get("notebooks", []) or []
    ]
    titles = {
        (project_dir / n["notebook"]).resolve(): n.get("title")
        for n in manuscript.get("notebooks", []) or []
    }
    links = []
    for nb_path in dict.fromkeys([*listed, *sorted(used)]):
        if not nb_path.is_file():
            continue
        title = titles.get(nb_path) or nb_path.stem
        page_md = _notebook_page(nb_path, title, site)
        page = _pandoc(
            ["--from=markdown", "--to=html", "--standalone", "--mathml"], page_md, site_dir
        )
        page = page.replace("</head>", _CSS + "</head>", 1)
        (site_dir / "notebooks").mkdir(exist_ok=True)
        (site_dir / "notebooks" / f"{nb_path.stem}.html").write_text(page, encoding="utf-8")
        links.append(f'<a href="notebooks/{nb_path.stem}.html">{html.escape(title)}</a>')
    return links


def _colophon_html(pdf: Path, pdf_error: str, links: list[str]) -> str:
    """The article's closing colophon: how it was rendered, the PDF (or why there is none)
    and the notebook pages."""
    formats = (
        '<a href="index.pdf">PDF (Typst)</a>'
        if pdf.is_file()
        else f"PDF not produced ({html.escape(pdf_error)})"
    )
    return (
        f'<section class="colophon" id="colophon"><h2>Colophon</h2><p>{OFFLINE_NOTE} '
        f"{_COLOPHON}<br>Other formats: {formats}<br>Notebooks: {' · '.join(links) or 'none'}"
        "</p></section>\n"
    )


def render_offline(project_dir: Path | str, site_dir: Path | str) -> Path:
    """Render a staged Quarto manuscript project with pandoc and Typst (no Quarto).

    Parameters
    ----------
    project_dir : path
        Folder holding ``_quarto.yml`` (its ``manuscript.article``, default ``index.qmd``).
    site_dir : path
        Output folder (created; existing files are overwritten): ``index.html``,
        ``index.pdf`` (when Typst succeeds), ``figures/``, ``notebooks/<name>.html``.

    Returns
    -------
    Path
        ``site_dir / "index.html"``.
    """
    project_dir, site_dir = Path(project_dir).resolve(), Path(site_dir).resolve()
    config = yaml.safe_load((project_dir / "_quarto.yml").read_text(encoding="utf-8")) or {}
    manuscript = config.get("manuscript", {}) or {}
    article = project_dir / manuscript.get("article", "index.qmd")
    if not article.is_file():
        raise ManuscriptError(f"article {article} does not exist")
    site_dir.mkdir(parents=True, exist_ok=True)
    site = _Site(site_dir)
    meta, body = _split_front_matter(article.read_text(encoding="utf-8"))
    values = collect_values(_project_notebooks(project_dir, manuscript))
    for key in ("title", "subtitle", "abstract"):
        if isinstance(meta.get(key), str):
            meta[key] = resolve_values(meta[key], values, f"{article.name} front matter {key}")
    body = resolve_values(body, values, article.name)
    pmeta = _pandoc_metadata(meta, config, project_dir, article)
    meta_file = site_dir / "_metadata.yaml"
    meta_file.write_text(yaml.safe_dump(pmeta, allow_unicode=True), encoding="utf-8")
    body = re.sub(r"<!--.*?-->", "", body, flags=re.S)  # comments may hold draft shortcodes
    body, kept = _mask_code(body)
    numbers = _number_floats(body)

    def markdown(target: str, shapes: dict | None = None) -> tuple[str, set[Path]]:
        text = _resolve_native_floats(body, numbers)  # before embeds add their own floats
        text, used = _resolve_embeds(text, article.parent, site, numbers, target, shapes)
        text = _drop_shortcodes(_resolve_xrefs(text, numbers))
        return _unmask_code(text, kept), used

    common = ["--from=markdown", "--citeproc", f"--metadata-file={meta_file}", "--wrap=none"]
    if meta.get("number-sections") or config.get("number-sections"):
        common.append("--number-sections")
    html_text, used = markdown("html")  # raises EmbedError before anything else is written
    # PDF before HTML, so that the HTML links it only when it exists.
    pdf, pdf_error = _render_pdf(markdown, common, site_dir)
    links = _notebook_pages(project_dir, manuscript, used, site, site_dir)
    out = _pandoc([*common, "--to=html", "--standalone", "--mathml", "--toc"], html_text, site_dir)
    out = out.replace("</head>", _CSS + "</head>", 1)
    out = out.replace("</body>", _colophon_html(pdf, pdf_error, links) + "</body>", 1)
    (site_dir / "index.html").write_text(out, encoding="utf-8")
    meta_file.unlink()
    return site_dir / "index.html"


# ----------------------------------------------------------------------------- quarto + driver
def find_quarto() -> str | None:
    """Path of a ``quarto`` binary on PATH or next to this Python, else ``None``."""
    local = Path(sys.executable).parent / "quarto"
    return shutil.which("quarto") or (str(local) if local.is_file() else None)


def render_quarto(project_dir: Path | str, site_dir: Path | str, quarto: str | None = None) -> Path:
    """Run ``quarto render`` in ``project_dir`` and copy its ``output-dir`` to ``site_dir``."""
    project_dir, site_dir = Path(project_dir).resolve(), Path(site_dir).resolve()
    quarto = quarto or find_quarto()
    if not quarto:
        raise ManuscriptError("quarto is not installed (pip install quarto-cli, or quarto.org)")
    config = yaml.safe_load((project_dir / "_quarto.yml").read_text(encoding="utf-8")) or {}
    out_dir = project_dir / config.get("project", {}).get("output-dir", "_manuscript")
    shutil.rmtree(out_dir, ignore_errors=True)
    proc = subprocess.run([quarto, "render"], cwd=project_dir, capture_output=True, text=True)
    if proc.returncode:
        raise ManuscriptError(f"quarto render failed in {project_dir}:\n{proc.stderr[-4000:]}")
    shutil.copytree(out_dir, site_dir, dirs_exist_ok=True)
    for candidate in ("index.html", "paper/index.html"):
        if (site_dir / candidate).is_file():
            return site_dir / candidate
    raise ManuscriptError(f"quarto render wrote no index.html under {site_dir}")


def stage(profile: str, real: bool = False, root: Path | str | None = None) -> Path:
    """Copy ``_quarto.yml``, ``paper/`` and sanitised executed notebooks to ``build/manuscript-<tag>/``.

    Raises
    ------
    MissingNotebookError
        Naming every missing executed notebook and the command that makes them.
    """
    from crlm_lib.config import find_repo_root, run_tag

    repo = Path(root).resolve() if root else find_repo_root()
    tag = run_tag(profile, real)
    executed = repo / "notebooks" / "executed" / tag
    missing = [n for n in NOTEBOOKS if not (executed / n).is_file()]
    if missing:
        data = " DATA_DIR=/path/to/TCIA CLINICAL=/path/to/clinical.csv" if real else ""
        args = " --data /path/to/TCIA --clinical /path/to/clinical.csv" if real else ""
        raise MissingNotebookError(
            f"executed notebooks missing in {executed}: {', '.join(missing)}; run the "
            f"notebooks first: `crlm notebooks --profile {profile}{args}` (or `make notebooks "
            f"PROFILE={profile}{data}`; `make paper` runs them and renders)"
        )
    dest = repo / "build" / f"manuscript-{tag}"
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "notebooks").mkdir(parents=True)
    shutil.copy2(repo / "_quarto.yml", dest / "_quarto.yml")
    shutil.copytree(repo / "paper", dest / "paper", ignore=shutil.ignore_patterns("_build", ".*"))
    for name in NOTEBOOKS:
        nb = sanitize_notebook(json.loads((executed / name).read_text(encoding="utf-8")))
        (dest / "notebooks" / name).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    # {{< value name >}} for Quarto: the values and the shortcode extension that reads them
    values = collect_values(sorted((dest / "notebooks").glob("*.ipynb")))
    (dest / "values.json").write_text(json.dumps(values, indent=1), encoding="utf-8")
    if (repo / "_extensions").is_dir():
        shutil.copytree(repo / "_extensions", dest / "_extensions")
    return dest


def render(
    profile: str, real: bool = False, renderer: str = "auto", root: Path | str | None = None
) -> Path:
    """Stage and render the manuscript of one run; the site lands in ``_manuscript/<tag>/``.

    Parameters
    ----------
    profile : str
        Profile whose executed notebooks are embedded (``smoke``, ``cpu``, ``paper``).
    real : bool
        Use ``notebooks/executed/<profile>-real`` (the real cohort) instead of the synthetic.
    renderer : {"auto", "quarto", "offline"}
        ``auto`` uses Quarto when a binary is found, else the offline pandoc/Typst fallback.
    root : path, optional
        Repository root (found from the cwd when omitted).

    Returns
    -------
    Path
        The article's ``index.html``.
    """
    if renderer not in ("auto", "quarto", "offline"):
        raise ValueError(f"renderer must be auto, quarto or offline, not {renderer!r}")
    project = stage(profile, real, root)
    repo = project.parent.parent
    tag = project.name.removeprefix("manuscript-")
    quarto = find_quarto() if renderer != "offline" else None
    if renderer == "quarto" and not quarto:
        raise ManuscriptError("renderer='quarto' but no quarto binary on PATH or in the venv")
    final = repo / "_manuscript" / tag
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=final.parent))  # same filesystem: atomic
    try:
        if quarto:
            print(f"rendering with Quarto ({quarto})")
            index = render_quarto(project, tmp, quarto)
        else:
            print(f"rendering offline (pandoc/Typst fallback): {OFFLINE_NOTE}")
            index = render_offline(project, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / index.relative_to(tmp)


# ----------------------------------------------------------------------------- checks
def _png_texts(path: Path) -> list[str]:
    from PIL import Image

    with Image.open(path) as im:
        return [f"{k}={v}" for k, v in {**im.info, **getattr(im, "text", {})}.items()]


def check_site(site_dir: Path | str, phi_values: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Problems of a rendered site; an empty list means none found.

    Looks for: a missing ``index.html``; images or local links that point to missing files;
    unresolved cross-references (``?@label``) and citations (pandoc's ``key?``); and every
    ``phi_values`` string (case-sensitive) in any file: text files (HTML, JSON, SVG, ...),
    raw bytes of binaries, and PNG text chunks. PDF text streams are compressed, so a PHI string
    in the PDF is only caught through the HTML it was made from.
    """
    site_dir = Path(site_dir)
    problems: list[str] = []
    index = site_dir / "index.html"
    if not index.is_file():
        problems.append(f"missing article {index}")
    phi = [p for p in phi_values if p]
    for path in sorted(p for p in site_dir.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        rel = path.relative_to(site_dir)
        texts = [raw.decode("utf-8", errors="ignore")]
        if path.suffix.lower() == ".png":
            try:
                texts += _png_texts(path)
            except Exception as err:  # noqa: BLE001
                problems.append(f"{rel}: unreadable PNG ({err})")
        for value in phi:
            if any(value in t for t in texts):
                problems.append(f"{rel}: contains PHI string {value!r}")
        if path.suffix.lower() in (".html", ".htm"):
            page = texts[0]
            for src in re.findall(r'(?:src|href)="([^"#:?]+)(?:#[^"]*)?"', page):
                if not (path.parent / src).exists():
                    problems.append(f"{rel}: missing embedded file {src}")
            for label in re.findall(r"\?@([\w-]+)", page):
                problems.append(f"{rel}: unresolved cross-reference @{label}")
            for key in re.findall(r"<strong>([\w:.-]+)\?</strong>", page):
                problems.append(f"{rel}: unresolved citation @{key}")
    return problems


_NUMBER_RE = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_PDF_CAPTION_RE = re.compile(
    r"^\s*(Table|Figure)\s+(\d+):", re.M
)  # justified lines stretch the space


def _numbers(text: str) -> list[str]:
    return _NUMBER_RE.findall(text.replace("\u2212", "-"))


def article_tables(index_html: str) -> dict[str, list[list[str]]]:
    """Every numbered table of a rendered article: caption number -> its cells' text by row
    (the caption's ``Table N:`` prefix gives the number)."""
    tables: dict[str, list[list[str]]] = {}
    for m in re.finditer(r"<table[^>]*>(.*?)</table>", index_html, re.S | re.I):
        cap = re.search(r"<caption[^>]*>(.*?)</caption>", m.group(1), re.S | re.I)
        number = re.search(r"Table(?:&nbsp;|\s|\xa0)+(\d+):", cap.group(1)) if cap else None
        if number:
            body = m.group(1)[cap.end() :]
            tables[number.group(1)] = _html_rows(body)
    return tables


def pdf_table_problems(index_html: str, pdf_text: str) -> list[str]:
    """Numbers of the article's tables that the PDF does not print under the same table.

    ``pdf_text`` is ``pdftotext -layout`` of the PDF. For table N the PDF region runs from its
    caption ``Table N:`` to the next table or figure caption; every number of every cell of
    the HTML table (``0.712``, ``17,215,147``; a minus sign counts as ``-``) must appear there
    at least as often as in the table. A table cut at the page edge, a row pushed off the
    page or two cells printed over each other fail. Problems name the table, row and number.
    """
    caps = list(_PDF_CAPTION_RE.finditer(pdf_text))
    problems = []
    for number, rows in article_tables(index_html).items():
        starts = [i for i, c in enumerate(caps) if c.group(1) == "Table" and c.group(2) == number]
        if not starts:
            problems.append(f"Table {number}: caption not found in the PDF text")
            continue
        i = starts[0]
        stop = caps[i + 1].start() if i + 1 < len(caps) else len(pdf_text)
        found = _numbers(pdf_text[caps[i].start() : stop])
        counts: dict[str, int] = {}
        for row in rows:
            for cell in row:
                for num in _numbers(cell):
                    counts[num] = counts.get(num, 0) + 1
                    if found.count(num) < counts[num]:
                        problems.append(
                            f"Table {number}: {num} of row {' | '.join(row)[:80]!r} "
                            "is missing from the PDF"
                        )
    return problems


def check_pdf_tables(site_dir: Path | str) -> list[str]:
    """:func:`pdf_table_problems` of a rendered site (``index.html`` against ``index.pdf``
    through ``pdftotext -layout``); an empty list when either file or ``pdftotext`` (poppler)
    is missing."""
    site_dir = Path(site_dir)
    pdf, page = site_dir / "index.pdf", site_dir / "index.html"
    exe = shutil.which("pdftotext")
    if not (exe and pdf.is_file() and page.is_file()):
        return []
    proc = subprocess.run([exe, "-layout", str(pdf), "-"], capture_output=True, text=True)
    if proc.returncode:
        return [f"{pdf}: pdftotext failed: {proc.stderr.strip()[:200]}"]
    html_text = page.read_text(encoding="utf-8", errors="ignore")
    return [f"{pdf}: {p}" for p in pdf_table_problems(html_text, proc.stdout)]


def check_manuscript(
    index_html: Path | str, article: Path | str, phi: Sequence[str] = ()
) -> list[str]:
    """Problems of a rendered article against its source: :func:`check_site` plus every
    embedded figure and table of ``article`` present in ``index_html`` (by its ``id``).

    ``make test`` runs it on the smoke-profile site with the synthetic cohort's fake PHI
    values (``crlm render --check``): a rendered site that lost an embed, or that shows a
    patient name or birth date, fails the build; so does a PDF table that lost a number
    (:func:`check_pdf_tables`, where ``pdftotext`` is installed).
    """
    index_html = Path(index_html)
    problems = check_site(index_html.parent, list(phi)) + check_pdf_tables(index_html.parent)
    if not index_html.is_file():
        return problems
    page = index_html.read_text(encoding="utf-8", errors="ignore")
    text = Path(article).read_text(encoding="utf-8")
    for m in _EMBED_RE.finditer(text):
        label = m.group("label")
        if label.startswith(("fig-", "tbl-")) and f'id="{label}"' not in page:
            problems.append(f"{index_html}: embedded {label} is missing")
    return problems
