"""Start-up and per-patient time of ``crlm predict`` (targets: start-up <= 5 s, one new patient
end to end <= 10 s after the first call, on the 2-core CPU).

Wall-clock seconds depend on what else the machine runs: the script prints the load average and
the CPU seconds of this process beside them (``time.process_time``, all threads: about the wall
time of an idle machine when torch's threads are busy in parallel, more when they are not).

Start-up is measured in a fresh interpreter from the first line of this script: importing
``crlm_lib.predict`` and loading every model of the ensemble (``predict.load_runs``). Then each
patient is scored end to end by ``predict.predict_new`` (clinical row read, CT and SEG read and
preprocessed, every model's prediction, Grad-CAM and SHAP, NIfTI and 12 DICOM maps, HTML and
PDF report): the first call pays the explanation and plotting libraries' imports, the later
("warm") calls are what a clinic waiting for the next patient sees. The stage lines of one warm
call are printed with ``--stages``.

Without ``--run``, a smoke-profile cross-validation is trained first under ``--root``
(``prediction_honesty.train_ensemble``: ``--folds`` fold models of 4D-ACFNet on ``--n``
synthetic patients), and held-out synthetic patients are written to score.

Usage::

    python benchmarks/predict_speed.py [--run runs/smoke/cv/acfnet --cohort DIR --clinical CSV]
        [--patients 4] [--root /tmp/crlm-speed] [--stages]
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def _prepare(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """``(ensemble folder, folder of new patients, their clinical table)``: trained and written
    in a child process (so that this process's start-up is measured cold)."""
    if args.run:
        return Path(args.run), Path(args.cohort), Path(args.clinical)
    root = Path(args.root or tempfile.mkdtemp(prefix="crlm-speed-"))
    code = (
        "import argparse, sys; sys.path.insert(0, 'benchmarks');"
        "from prediction_honesty import train_ensemble;"
        "from crlm_lib.config import get_profile; from crlm_lib.data import synthetic;"
        f"a = argparse.Namespace(profile='smoke', folds={args.folds}, epochs=1, n={args.n}, "
        "model='acfnet', seed=0);"
        f"print(train_ensemble(a, __import__('pathlib').Path({str(root)!r})));"
        f"synthetic.write_cohort({str(root / 'new')!r}, {args.patients}, 2024, "
        "get_profile('smoke').synth, progress=False)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    cv_dir = Path(done.stdout.strip().splitlines()[-1])
    return cv_dir, root / "new" / "Colorectal-Liver-Metastases", root / "new" / "clinical.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run or cross-validation folder")
    ap.add_argument("--cohort", default=None, help="folder of new patients (with --run)")
    ap.add_argument("--clinical", default=None, help="their clinical table (with --run)")
    ap.add_argument("--patients", type=int, default=4, help="patients scored, one per call")
    ap.add_argument("--n", type=int, default=30, help="training cohort without --run")
    ap.add_argument("--folds", type=int, default=5, help="fold models without --run")
    ap.add_argument("--root", default=None)
    ap.add_argument("--stages", action="store_true", help="stage lines of the last call")
    args = ap.parse_args()
    if not args.run:
        # train and write the patients first, then measure in a fresh interpreter
        run, cohort, clinical = _prepare(args)
        argv = [sys.executable, __file__, "--run", str(run), "--cohort", str(cohort),
                "--clinical", str(clinical), "--patients", str(args.patients)]  # fmt: skip
        os.execv(sys.executable, [*argv, *(["--stages"] if args.stages else [])])
    _measure(args)


def _measure(args: argparse.Namespace) -> None:
    from crlm_lib.predict import PredictOptions, load_runs, predict_new

    runs = load_runs([args.run])
    startup, startup_cpu = time.perf_counter() - _T0, time.process_time()
    patients = sorted(p for p in Path(args.cohort).iterdir() if p.is_dir())[: args.patients]
    times, cpu = [], []
    with tempfile.TemporaryDirectory() as out:
        for i, patient in enumerate(patients):
            last = i == len(patients) - 1
            opts = PredictOptions(allow_missing=True, progress=args.stages and last)
            start, start_cpu = time.perf_counter(), time.process_time()
            predict_new([args.run], [patient], out, args.clinical, opts)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    print(f"ensemble: {len(runs)} model(s) of {runs[0].record['model']} "
          f"(profile {runs[0].record['profile']}); torch threads: "
          f"{__import__('torch').get_num_threads()}")  # fmt: skip
    print(f"start-up (imports + {len(runs)} models loaded): {startup:.1f} s wall, "
          f"{startup_cpu:.1f} s CPU (target <= 5 s)")  # fmt: skip
    print(f"first patient (cold): {times[0]:.1f} s wall, {cpu[0]:.1f} s CPU")
    if len(times) > 1:
        warm, warm_cpu = times[1:], cpu[1:]
        print(f"warm patients: median {statistics.median(warm):.1f} s wall (max {max(warm):.1f}), "
              f"median {statistics.median(warm_cpu):.1f} s CPU, over {len(warm)} "
              "(target <= 10 s)")  # fmt: skip
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
