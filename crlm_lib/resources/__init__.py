"""Data files shipped with the package, and the one loader that reads them.

- ``published.csv``: every number the papers report, long form (``table``, ``source``,
  ``model``, ``metric``, ``value``), one row per (table, model, metric) in the papers' order,
  each value as the paper prints it (``1.0625``, ``0.7000``); read by
  :func:`crlm_lib.evaluation.tables.published_table` and ``published_text``.
- ``tripod_ai.csv``: the TRIPOD+AI checklist (Collins et al., BMJ 2024) under its official item
  numbers (``1`` ... ``27c``), with where this manuscript meets each item (``item``, ``topic``,
  ``where met / why not``, ``section``: the article's ``sec-`` id, empty where not met); read
  by :func:`crlm_lib.evaluation.tables.tripod_checklist`.

Editing a number or an item means editing the CSV; no Python literal holds them.
"""

from __future__ import annotations

import csv
from importlib import resources


def read_rows(name: str) -> list[dict[str, str]]:
    """The rows of the packaged CSV file ``name`` as dicts of strings (header = keys), in order.

    Raises
    ------
    FileNotFoundError
        When the package holds no file ``name`` (a broken install: see ``pyproject.toml``,
        ``[tool.setuptools.package-data]``).
    """
    with resources.files(__name__).joinpath(name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
