"""Segment labels: which ``SegmentLabel`` of a DICOM-SEG is which structure of ``MASK_NAMES``.

A :class:`LabelMap` names the structures of one export. The TCIA collection's labels
(``Liver``, ``Liver_Remnant``, ``Hepatic``, ``Portal``, ``Tumor_1..N`` and their usual
variants) are :data:`TCIA_LABELS`, the default. Another hospital's export needs its own map,
not a code change: a JSON file

.. code-block:: json

    {"name": "hospital-x",
     "labels": {"Leber": "liver", "Restleber": "remnant", "Lebervenen": "hepatic",
                "Pfortader": "portal"},
     "tumour_pattern": "^metastase\\\\d+$",
     "ignore": ["Gallenblase"]}

read by :meth:`LabelMap.from_file` (or a dict, :meth:`LabelMap.from_dict`), passed to the
reader (``data.dicom.DicomExport(label_map=...)``), or saved as ``label_map.json`` at the top
of the export's folder, where :func:`crlm_lib.data.dicom.source_for` finds it. Matching is
case-insensitive after removing spaces, ``_`` and ``-``. Every segment mapped to ``tumour``
(by name or by ``tumour_pattern``) is one lesion. In a map read from a file or a dict, a label
that is neither mapped nor listed in ``ignore`` stops the patient with a
:class:`~crlm_lib.data.dicom.records.SegmentLabelError` naming the patient, the SEG file and
the label (``strict``); the TCIA map ignores an unknown label with a warning instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crlm_lib.config import MASK_NAMES

#: File name of an export's own label map, looked for at the top of its folder.
LABEL_MAP_FILE = "label_map.json"


def label_key(label: str) -> str:
    """The form labels are compared in: lower case, without spaces, ``_`` and ``-``."""
    return re.sub(r"[\s_\-]+", "", str(label)).lower()


@dataclass(frozen=True)
class LabelMap:
    """``SegmentLabel`` -> structure of ``MASK_NAMES`` for one DICOM export.

    Attributes
    ----------
    labels : Mapping[str, str]
        Label -> structure (``liver``, ``remnant``, ``hepatic``, ``portal`` or ``tumour``);
        keys are compared through :func:`label_key`.
    tumour_pattern : str, optional
        Regular expression matched (``re.match``) against :func:`label_key` of a label: every
        match is a tumour segment (one lesion), e.g. ``^tumou?r\\d*$``.
    ignore : frozenset of str
        Labels present in the export's SEGs that are no structure of the model (left out).
    strict : bool
        An unknown label stops the patient (``SegmentLabelError``); ``False``: ignored with a
        warning.
    name : str
        Shown in errors and in the preprocessing settings.
    """

    labels: Mapping[str, str]
    tumour_pattern: str | None = None
    ignore: frozenset[str] = field(default_factory=frozenset)
    strict: bool = True
    name: str = "custom"

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.labels.items() if v not in MASK_NAMES}
        if bad:
            raise ValueError(
                f"label map {self.name!r}: {bad} name no structure of {list(MASK_NAMES)}"
            )
        keys = {label_key(k): v for k, v in self.labels.items()}
        object.__setattr__(self, "labels", dict(sorted(keys.items())))
        object.__setattr__(self, "ignore", frozenset(label_key(k) for k in self.ignore))
        if self.tumour_pattern is not None:
            re.compile(self.tumour_pattern)

    def knows(self, label: str) -> bool:
        """Whether ``label`` is mapped, matches the tumour pattern or is ignored."""
        key = label_key(label)
        return key in self.labels or key in self.ignore or self._is_tumour(key)

    def structure(self, label: str) -> str | None:
        """The structure of ``label`` (``None`` for an ignored or, when not strict, unknown
        label)."""
        key = label_key(label)
        if key in self.labels:
            return self.labels[key]
        if self._is_tumour(key):
            return "tumour"
        return None

    def _is_tumour(self, key: str) -> bool:
        return self.tumour_pattern is not None and re.match(self.tumour_pattern, key) is not None

    def describe(self) -> str:
        """One line for error messages: the map's name and the labels it knows."""
        known = sorted(self.labels)
        if self.tumour_pattern:
            known.append(f"tumour pattern {self.tumour_pattern!r}")
        return f"label map {self.name!r} ({', '.join(known)})"

    def digest(self) -> str:
        """First 16 hex digits of the SHA-256 of the map (keys the preprocessing cache)."""
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """The JSON form :meth:`from_dict` reads."""
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "tumour_pattern": self.tumour_pattern,
            "ignore": sorted(self.ignore),
            "strict": self.strict,
        }

    @classmethod
    def from_dict(cls, spec: Mapping, name: str = "custom") -> LabelMap:
        """A strict map from ``{"labels": {...}, "tumour_pattern": ..., "ignore": [...]}``
        (a flat ``{label: structure}`` dict is read as ``labels``)."""
        if "labels" not in spec:
            spec = {"labels": spec}
        unknown = set(spec) - {"name", "labels", "tumour_pattern", "ignore", "strict"}
        if unknown:
            raise ValueError(f"label map {name!r}: unknown key(s) {sorted(unknown)}")
        return cls(
            labels=dict(spec["labels"]),
            tumour_pattern=spec.get("tumour_pattern"),
            ignore=frozenset(spec.get("ignore", ())),
            strict=bool(spec.get("strict", True)),
            name=str(spec.get("name", name)),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> LabelMap:
        """Read a JSON label map (see the module docstring).

        Raises
        ------
        ValueError
            Naming the file, when it is not JSON or names an unknown structure.
        """
        path = Path(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(spec, name=path.name)
        except ValueError as err:
            raise ValueError(f"label map {path}: {err}") from err


#: The TCIA Colorectal-Liver-Metastases collection's labels and their usual variants; unknown
#: labels are ignored with a warning (``strict=False``).
TCIA_LABELS = LabelMap(
    labels={
        "liver": "liver",
        "liverremnant": "remnant",
        "remnant": "remnant",
        "futureliverremnant": "remnant",
        "flr": "remnant",
        "hepatic": "hepatic",
        "hepaticvein": "hepatic",
        "hepaticveins": "hepatic",
        "portal": "portal",
        "portalvein": "portal",
        "portalveins": "portal",
    },
    tumour_pattern=r"^(tumou?r|lesion|metastas[ie]s|met)\d*$",
    strict=False,
    name="tcia",
)


def canonical_label(label: str) -> str | None:
    """Map a ``SegmentLabel`` to a name of ``MASK_NAMES`` through :data:`TCIA_LABELS`
    (``tumour`` for ``Tumor_N``; ``None`` when unknown).

    Matching is case-insensitive after removing spaces, ``_`` and ``-`` (``Liver_Remnant``,
    ``liver remnant`` and ``Remnant`` all give ``remnant``).
    """
    return TCIA_LABELS.structure(label)


def as_label_map(spec: LabelMap | Mapping | str | Path | None) -> LabelMap:
    """A :class:`LabelMap` from a map, a dict, a JSON file or ``None`` (:data:`TCIA_LABELS`)."""
    if spec is None:
        return TCIA_LABELS
    if isinstance(spec, LabelMap):
        return spec
    if isinstance(spec, Mapping):
        return LabelMap.from_dict(spec)
    return LabelMap.from_file(spec)
