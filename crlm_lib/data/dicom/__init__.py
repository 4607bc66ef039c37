"""The DICOM reader: a patient's CT series and DICOM-SEG -> :class:`Patient` (HU volume,
spacing, masks of ``MASK_NAMES``, lesions), behind one seam.

Modules, along the reader's steps: ``records`` (what the steps exchange, the
:class:`CohortDataError` family), ``discover`` (patients from the headers), ``ct`` (the CT
series), ``seg`` (the SEG's frames on the CT grid), ``labels`` (:class:`LabelMap`: which
segment label is which structure; :data:`TCIA_LABELS` by default) and ``source``
(:class:`DicomSource`, the protocol preprocessing and ``crlm predict`` call;
:class:`DicomExport`, its implementation; :func:`source_for`, :func:`load_patient`,
:func:`iter_cohort`, :func:`load_cohort`). ``data.tcia`` is this reader with the TCIA
collection's labels.

Another hospital's export needs a label map, not a code change: see
:mod:`crlm_lib.data.dicom.labels`.

Choices
-------
* **CT reader: pydicom** (not SimpleITK). The files are read one by one with pydicom so that
  every error can name the exact file (truncated slice, missing pixel data), and the SOP
  instance UIDs needed to check the SEG's references are at hand. Slices are sorted by the
  projection of ``ImagePositionPatient`` on the slice normal (row x column cosines), never by
  file name or ``InstanceNumber``; index 0 is the lowest position along the normal (for axial
  CT in LPS: the most caudal slice).
* **SEG reader: pydicom** (header with ``stop_before_pixels``, frames one at a time with
  ``pydicom.pixels.iter_pixels``; highdicom writes SEGs in the tests and the synthetic cohort,
  but its reader's per-frame lookup tables cost more than the rest of the load);
  frames are placed by their own ``PlanePositionSequence/ImagePositionPatient`` (matched to a CT slice
  along the normal and checked in-plane), falling back to ``DerivationImageSequence ->
  SourceImageSequence`` SOP instance UIDs when a frame carries no position. Frame order and
  frame count are never trusted: highdicom omits empty frames by default
  (``omit_empty_frames=True``) and ``Segmentation.get_volume`` returns only the slices that
  have frames, so frame index != slice index.
* ``direction`` follows the ITK convention: a row-major 3x3 matrix whose columns are the
  directions of the array axes X (row cosine), Y (column cosine) and Z (slice normal).
* ``origin`` is ``ImagePositionPatient`` (x, y, z mm, LPS) of slice index 0.
* **Memory**: SEG frames are decoded one at a time (``iter_pixels``; SEG files above
  ``LAZY_SEG_BYTES`` are read frame by frame from disk) straight into one
  volume per structure of ``MASK_NAMES``; each tumour segment is kept as a bounding-box crop
  (:class:`LesionMask`), so a SEG with dozens of tumours costs little more than one with one
  (``benchmarks/seg_memory.py``).
* **Duplicated slice positions** (an overlapping second acquisition, a slice exported twice):
  the whole series is kept, one slice per position, by two rules in this order. (1) When the
  series holds several acquisitions (``AcquisitionNumber``) and every slice the SEG references
  (the SOP instance UIDs of its ``ReferencedSeriesSequence`` and of its frames'
  ``DerivationImageSequence``) belongs to one of them, that acquisition's slices are kept,
  referenced or not. (2) At a position that still holds several slices, the one the SEG
  references is kept, else the one with the later ``InstanceNumber`` (a slice exported again
  carries the higher number). Each rule that sets files aside adds a warning naming the patient
  and the files; the slices kept then pass the usual gap and spacing checks. The series is
  never cut down to the slices the SEG references (a SEG may list only those that carry its
  frames). A SEG that names no source slice, one that references two slices at one position,
  or unreferenced duplicates whose instance numbers are equal or missing exclude the patient
  with a :class:`SliceGeometryError` naming the files. Likewise, several CT series for one
  patient are resolved by the one series the SEG references.
* **Missing structures**: a SEG without ``Liver_Remnant``, ``Hepatic``, ``Portal`` or tumour
  segments (e.g. from another tool) loads with those masks empty and a warning in
  ``Patient.warnings``; without ``Portal`` the preprocessing centres the crop on the liver's
  centre of mass instead of the portal-vein bifurcation (``centre_method``). ``Liver`` is
  required (mask channel and last anatomical fallback of the crop centre).
"""

from crlm_lib.data.dicom.ct import image_fingerprint, read_ct_series
from crlm_lib.data.dicom.discover import discover
from crlm_lib.data.dicom.labels import (
    LABEL_MAP_FILE,
    TCIA_LABELS,
    LabelMap,
    as_label_map,
    canonical_label,
    label_key,
)
from crlm_lib.data.dicom.records import (
    CT_MODALITY,
    REQUIRED_STRUCTURES,
    SEG_MODALITY,
    CohortDataError,
    CTSeries,
    DicomReadError,
    EmptySegmentError,
    LabelMasks,
    LesionMask,
    MissingAttributeError,
    MissingSeriesError,
    MultipleSeriesError,
    NoDicomError,
    Patient,
    PatientRef,
    SegFile,
    SegGeometryError,
    SegmentLabelError,
    SegReferenceError,
    SliceGeometryError,
)
from crlm_lib.data.dicom.seg import open_seg_file, paint_label_masks
from crlm_lib.data.dicom.source import (
    DicomExport,
    DicomSource,
    iter_cohort,
    load_cohort,
    load_patient,
    source_for,
)

__all__ = [
    "CT_MODALITY",
    "LABEL_MAP_FILE",
    "REQUIRED_STRUCTURES",
    "SEG_MODALITY",
    "TCIA_LABELS",
    "CTSeries",
    "CohortDataError",
    "DicomExport",
    "DicomReadError",
    "DicomSource",
    "EmptySegmentError",
    "LabelMap",
    "LabelMasks",
    "LesionMask",
    "MissingAttributeError",
    "MissingSeriesError",
    "MultipleSeriesError",
    "NoDicomError",
    "Patient",
    "PatientRef",
    "SegFile",
    "SegGeometryError",
    "SegReferenceError",
    "SegmentLabelError",
    "SliceGeometryError",
    "as_label_map",
    "canonical_label",
    "discover",
    "image_fingerprint",
    "iter_cohort",
    "label_key",
    "load_cohort",
    "load_patient",
    "open_seg_file",
    "paint_label_masks",
    "read_ct_series",
    "source_for",
]
