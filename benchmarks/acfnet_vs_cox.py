"""4D-ACFNet vs the clinical anchors in notebook 06's exact cross-validation protocol.

The manuscript's CV table (notebook 06, ``tbl-cv``) is made by
``evaluation.run_cv_protocol(profile.eval.cv_models, study, profile, seed=seed)`` with every
default: the profile's folds and repeats (clinical anchors ``cv_repeats``, image models
``cv_repeats_3d``), the profile's image-model epochs (``cv_epochs_3d``), the anchors Fong, Cox,
random survival forest and the oracle, a stratified 10% inner validation split of each training
fold for early stopping, per-fold IPCW, ``profile.eval.bootstrap`` replicates, OS and DFS heads.
This script makes the same call with the same study (``pipeline.load_study``) and seed,
restricted to the models named on the command line. Every (model, repeat, fold) is fitted
independently with the seeds of that call, and the bootstrap draws depend on the seed and the
patients only, so each row printed here is the row the manuscript shows for that model.
Nothing about the protocol can be changed from the command line except the model options
(``--option``), the seed and the bootstrap size (intervals only; estimates do not depend on it),
and, to measure what a longer training buys, ``--epochs`` and ``--repeats`` (image models
only; the header line then says that the protocol is not the manuscript's).

Usage (build the cohort first: ``python -m crlm_lib.cli data --profile cpu``)::

    nice -n 10 python benchmarks/acfnet_vs_cox.py                  # acfnet, acfnet:censored
    nice -n 10 python benchmarks/acfnet_vs_cox.py --option clinical_residual=false
    nice -n 10 python benchmarks/acfnet_vs_cox.py --boot 100       # faster, rougher intervals

Prints the OS and DFS Harrell C (mean over repeats of the pooled out-of-fold predictions, 95%
percentile bootstrap interval over patients, conditional on the fitted models) of every model
and anchor, and the paired difference against Cox. Synthetic cohort: the numbers are about the
synthetic generator, not patients. The numbers of a cpu-profile run, with their intervals and
their reading: ``docs/performance.md``, "What the cpu build shows".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace

from crlm_lib.config import get_profile
from crlm_lib.evaluation import ModelSpec, as_specs, run_cv_protocol
from crlm_lib.pipeline import load_study


def _spec(token: str, options: dict) -> ModelSpec:
    """``evaluation.as_specs`` of the token (names, ``:censored``, variants), with the
    ``--option`` values added to its build options."""
    spec = as_specs([token])[0]
    return replace(spec, label=spec.key, options={**spec.options, **options})


def _value(text: str):
    try:
        return json.loads(text.lower() if text.lower() in ("true", "false") else text)
    except json.JSONDecodeError:
        return text


def _cell(r) -> str:
    return f"{r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--models", nargs="+", default=["acfnet", "acfnet:censored"])
    ap.add_argument("--boot", type=int, default=None, help="default: the profile's")
    ap.add_argument("--seed", type=int, default=0, help="notebook 06's parameter (0)")
    ap.add_argument("--option", action="append", default=[], help="KEY=VALUE model option")
    ap.add_argument("--runs-dir", default=None, help="default: a fresh temporary folder")
    ap.add_argument(
        "--epochs", type=int, default=None, help="image-model epochs (NOT the manuscript's)"
    )
    ap.add_argument(
        "--repeats", type=int, default=None, help="image-model CV repeats (NOT the manuscript's)"
    )
    args = ap.parse_args(argv)

    prof = get_profile(args.profile)
    changed = args.epochs is not None or args.repeats is not None
    if args.epochs is not None:
        prof = prof.with_(eval=replace(prof.eval, cv_epochs_3d=args.epochs))
    if args.repeats is not None:
        prof = prof.with_(eval=replace(prof.eval, cv_repeats_3d=args.repeats))
    ev = prof.eval
    options = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.option)}
    specs = [_spec(m, options) for m in args.models]
    study = load_study(prof, seed=args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = run_cv_protocol(
            specs,
            study,
            prof,
            seed=args.seed,
            n_boot=args.boot,
            runs_dir=args.runs_dir or tmp,
            interval="conditional_bootstrap",  # the interval this script documents
        )
    took = time.perf_counter() - t0
    print(
        f"{prof.name} profile, {len(study.ids)} patients, {ev.cv_folds} folds; anchors "
        f"{ev.cv_repeats} repeats, image models {ev.cv_repeats_3d} x {ev.cv_epochs_3d} epochs; "
        f"bootstrap {args.boot if args.boot is not None else ev.bootstrap}; options "
        f"{options or '{}'}; {took:.0f} s"
        + ("; EPOCHS/REPEATS CHANGED: not the manuscript's protocol" if changed else "")
    )
    tidy = res.tidy.set_index(["model", "metric"])
    print(f"  {'model':<22s} {'OS Harrell C':<24s} {'DFS Harrell C':<24s}")
    for key in dict.fromkeys(res.tidy["model"]):
        os_c, dfs_c = tidy.loc[(key, "os_c_harrell")], tidy.loc[(key, "dfs_c_harrell")]
        print(f"  {key:<22s} {_cell(os_c):<24s} {_cell(dfs_c):<24s}")
    d = res.differences
    if len(d):
        d = d[d["baseline"].isin(["cox", "ct-permuted", "step-0"])]
        d = d[d["metric"].isin(["os_c_harrell", "dfs_c_harrell"])]
        for _, r in d.iterrows():
            print(f"  {r['model']} - {r['baseline']}  {r['metric']:<14s} {_cell(r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
