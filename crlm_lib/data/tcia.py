"""The TCIA "Colorectal-Liver-Metastases" collection, read through the DICOM reader seam.

The collection (Simpson et al., Sci Data 11:172, 2024; doi:10.7937/QXK2-QG03) holds, per
patient, one preoperative portal-venous CT series (one file per slice) and one multi-frame
DICOM-SEG with segments ``Liver``, ``Liver_Remnant``, ``Hepatic``, ``Portal`` and
``Tumor_1..N``. The synthetic cohort (``crlm_lib.data.synthetic``) writes the same layout.

The reader itself is :mod:`crlm_lib.data.dicom` (discovery, CT, SEG, label map behind
:class:`~crlm_lib.data.dicom.DicomSource`); this module is that reader with the collection's
labels (:data:`TCIA_SOURCE`, :data:`~crlm_lib.data.dicom.TCIA_LABELS`) and keeps the reader's
names importable from here (``tcia.load_patient``, ``tcia.CohortDataError`` ...).
"""

from __future__ import annotations

from crlm_lib.data.dicom import (
    CT_MODALITY,
    REQUIRED_STRUCTURES,
    SEG_MODALITY,
    TCIA_LABELS,
    CohortDataError,
    CTSeries,
    DicomExport,
    DicomReadError,
    EmptySegmentError,
    LabelMap,
    LesionMask,
    MissingAttributeError,
    MissingSeriesError,
    MultipleSeriesError,
    NoDicomError,
    Patient,
    PatientRef,
    SegGeometryError,
    SegmentLabelError,
    SegReferenceError,
    SliceGeometryError,
    canonical_label,
    discover,
    image_fingerprint,
    iter_cohort,
    load_cohort,
    load_patient,
)

#: The collection's reader: the DICOM export layout with the TCIA segment labels.
TCIA_SOURCE = DicomExport(TCIA_LABELS)

__all__ = [
    "CT_MODALITY",
    "REQUIRED_STRUCTURES",
    "SEG_MODALITY",
    "TCIA_LABELS",
    "TCIA_SOURCE",
    "CTSeries",
    "CohortDataError",
    "DicomReadError",
    "EmptySegmentError",
    "LabelMap",
    "LesionMask",
    "MissingAttributeError",
    "MissingSeriesError",
    "MultipleSeriesError",
    "NoDicomError",
    "Patient",
    "PatientRef",
    "SegGeometryError",
    "SegReferenceError",
    "SegmentLabelError",
    "SliceGeometryError",
    "canonical_label",
    "discover",
    "image_fingerprint",
    "iter_cohort",
    "load_cohort",
    "load_patient",
]
