"""Benchmark: preprocessing throughput and where its time goes (not a test).

``python benchmarks/preprocess.py --profile cpu [--n N] [--n-jobs J] [--repeats R]
[--cprofile 25] [--matrix 512]`` writes a synthetic cohort of ``N`` patients in a temporary folder, then,
``R`` times interleaved in this process (read, preprocess, read, preprocess ...: the machine is
shared, so only same-process interleaved medians are comparable), times

* the bare DICOM read (``pydicom.dcmread`` of every file: the floor), and
* the whole preprocessing (``preprocess_cohort``: discover, load CT + SEG, centre slice, CLAHE,
  resize, closing, lesion radiomics, atomic ``.npz`` write) into a fresh folder,

and prints patients/s, the median ratio, the time per stage per patient (each stage timed
alone on the loaded patients, same functions as :func:`preprocess_patient`; loading also split
into the SEG's per-frame values and the CT slices), a lower bound on the ratio (the stages that
compute on in-memory arrays, in units of the bare read, plus the read itself), and the peak
memory per patient (``tracemalloc`` peak during one ``process_one``: numpy and pydicom report
their buffers to it) beside the process's ``ru_maxrss``. ``--cprofile K`` also prints the
``K`` functions with the most own time in one preprocessing pass.

Usage::

    python benchmarks/preprocess.py --profile cpu --n 8                # the cpu profile's grid
    python benchmarks/preprocess.py --profile paper --n 4 --repeats 2  # 256x256 -> 40x128x128
    python benchmarks/preprocess.py --profile paper --n 3 --repeats 2 --matrix 512  # real matrix

Measured ratios, patients/s and per-stage times: ``docs/performance.md``, "Where the time goes,
part by part" (Preprocessing).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from skimage import exposure

from crlm_lib.config import MASK_NAMES, Paths, get_profile
from crlm_lib.data import preprocess, synthetic, tcia
from crlm_lib.data.clahe import clahe_slices
from crlm_lib.data.dicom import open_seg_file, read_ct_series
from crlm_lib.data.lesions import lesion_features


def _paths(root: Path, cohort: Path, name: str, processed: Path) -> Paths:
    return Paths(
        root, name, cohort, cohort / "clinical.csv", None, processed, root / "r", root / "s", True
    )


def stage_times(refs, cfg) -> dict[str, float]:
    """Milliseconds per patient of each stage of ``process_one``, timed one by one."""
    acc: dict[str, float] = {}

    def timed(key, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0
        return out

    for ref in refs:
        files = [f for fs in ref.ct_series.values() for f in fs] + list(ref.seg_files)
        timed("bare read (floor)", lambda fs=files: [pydicom.dcmread(f) for f in fs])
        p = timed("load CT + SEG", tcia.load_patient, ref)
        # its two largest parts, timed again on fresh reads (pydicom converts an element the
        # first time it is accessed, so the SEG's groups cost what they cost in the loader)
        seg_path, pid = ref.seg_files[0], ref.patient_id
        seg = open_seg_file(pid, seg_path).dataset
        timed("  of which SEG per-frame", _frame_group_values, seg)
        ct_files = next(iter(ref.ct_series.values()))
        timed("  of which CT slices", read_ct_series, pid, ct_files, None, seg_path)
        c, _ = timed(
            "centre slice",
            preprocess.find_bifurcation,
            p.masks["portal"],
            p.spacing,
            p.masks["liver"],
        )
        z = preprocess.slice_window(p.ct.shape[0], c, cfg.depth)
        kept = z[z >= 0]
        u = preprocess._window01(p.ct[kept], cfg.hu_window)
        timed(
            "CLAHE (skimage, slices)",
            lambda u=u: np.stack(
                [exposure.equalize_adapthist(s, clip_limit=cfg.clahe_clip_limit) for s in u]
            ),
        )
        u = timed("CLAHE (data.clahe)", clahe_slices, u, cfg.clahe_clip_limit)
        timed("cubic resize", preprocess._resize_inplane, u.astype(np.float32), cfg.size, 3)
        for name in MASK_NAMES:
            m = timed(
                "mask resize",
                preprocess._resize_inplane,
                p.masks[name][kept].astype(np.uint8),
                cfg.size,
                0,
            )
            full = np.zeros((cfg.depth, cfg.size, cfg.size), bool)
            full[z >= 0] = m > 0
            timed("mask closing", preprocess.close_mask, full, cfg.closing_radius)
        timed(
            "lesion radiomics",
            lesion_features,
            p.ct,
            p.lesions,
            p.spacing,
            tumour_mask=p.masks["tumour"],
        )
        arrays = preprocess.preprocess_patient(p, cfg)
        with tempfile.TemporaryDirectory() as tmp:
            timed(".npz write", preprocess.atomic_savez, Path(tmp) / "x.npz", **arrays)
    return {k: v / len(refs) * 1e3 for k, v in acc.items()}


def _frame_group_values(seg) -> list:
    """What the loader reads from each SEG frame's functional groups (segment number, position,
    source image), on a freshly read dataset: pydicom's parsing and value conversion of the
    per-frame groups, without the loader's checks and placement."""
    out = []
    for fg in seg.PerFrameFunctionalGroupsSequence:
        number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]
        src = [
            str(s.ReferencedSOPInstanceUID)
            for d in getattr(fg, "DerivationImageSequence", [])
            for s in getattr(d, "SourceImageSequence", [])
        ]
        out.append((number, ipp, src))
    return out


#: Stages that compute on arrays already in memory (no DICOM parsing): their sum, in units of
#: the bare read, is a lower bound on the whole ratio even if loading cost nothing but the read.
COMPUTE_STAGES = (
    "centre slice",
    "CLAHE (data.clahe)",
    "cubic resize",
    "mask resize",
    "mask closing",
    "lesion radiomics",
    ".npz write",
)


def peak_memory_per_patient(refs, cfg, digest: str) -> list[float]:
    """``tracemalloc`` peak (MiB) of one ``process_one`` call per patient."""
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for ref in refs:
            tracemalloc.start()
            preprocess.process_one(ref, cfg, Path(tmp) / "x.npz", digest, "2d")
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cprofile", type=int, default=0, help="print the top K functions")
    ap.add_argument(
        "--matrix",
        type=int,
        default=0,
        help="synthetic in-plane matrix instead of the profile's (512: the real collection's; "
        "the field of view is kept)",
    )
    args = ap.parse_args()
    prof = get_profile(args.profile)
    if args.matrix:
        synth = prof.synth
        fov = synth.matrix * synth.pixel_spacing_mm
        prof = prof.with_(
            synth=replace(synth, matrix=args.matrix, pixel_spacing_mm=fov / args.matrix)
        )
    cfg = prof.preprocess
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cohort = synthetic.write_cohort(root / "cohort", args.n, 0, prof.synth, progress=False)
        files = list(cohort.rglob("*.dcm"))
        t_read, t_all = [], []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            for f in files:
                pydicom.dcmread(f)
            t_read.append(time.perf_counter() - t0)
            out = root / f"processed{rep}"
            t0 = time.perf_counter()
            report = preprocess.preprocess_cohort(
                _paths(root, cohort, prof.name, out), prof, n_jobs=args.n_jobs, progress=False
            )
            t_all.append(time.perf_counter() - t0)
            shutil.rmtree(out)
        n_done = int((report["status"] == "done").sum())
        ratios = [a / r for a, r in zip(t_all, t_read)]
        print(
            f"profile={prof.name} patients={args.n} done={n_done} files={len(files)} "
            f"n_jobs={args.n_jobs} repeats={args.repeats} (interleaved, medians)"
        )
        print(
            f"read DICOM bytes: {statistics.median(t_read):.2f} s; "
            f"whole preprocessing: {statistics.median(t_all):.2f} s"
        )
        print(f"patients per second: {n_done / statistics.median(t_all):.2f}")
        print(
            f"ratio preprocessing / DICOM read: {statistics.median(ratios):.1f}x "
            f"(each: {', '.join(f'{r:.1f}' for r in ratios)}; goal <= 3x)"
        )
        refs = tcia.discover(cohort)
        t0 = time.perf_counter()
        tcia.discover(cohort)
        print(f"\nper patient, ms (discover: {(time.perf_counter() - t0) / len(refs) * 1e3:.1f})")
        stages = stage_times(refs, cfg)
        for key, ms in stages.items():
            print(f"  {key:>24}: {ms:7.1f}")
        floor = statistics.median(t_read) / len(refs) * 1e3  # the interleaved read, per patient
        compute = sum(stages[k] for k in COMPUTE_STAGES)
        print(
            f"bare read {floor:.1f} ms per patient (interleaved runs above); compute stages "
            f"alone ({', '.join(COMPUTE_STAGES)}): {compute:.1f} ms = "
            f"{compute / floor:.1f}x the bare read; SEG per-frame values alone "
            f"{stages['  of which SEG per-frame'] / floor:.1f}x; so even with every other "
            f"step free the whole is >= {1 + compute / floor:.1f}x"
        )
        digest = preprocess.settings_hash(cfg)
        peaks = peak_memory_per_patient(refs, cfg, digest)
        print(
            f"peak traced memory per patient: median {statistics.median(peaks):.1f} MiB, "
            f"max {max(peaks):.1f} MiB; process ru_maxrss "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )
        if args.cprofile:
            pr = cProfile.Profile()
            pr.enable()
            preprocess.preprocess_cohort(
                _paths(root, cohort, prof.name, root / "cprof"), prof, n_jobs=1, progress=False
            )
            pr.disable()
            buf = io.StringIO()
            pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(args.cprofile)
            print(buf.getvalue())


if __name__ == "__main__":
    main()
