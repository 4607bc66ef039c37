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
synthetic generator, not patients.

Measured (cpu profile, 197 synthetic patients, 5 folds; anchors 5 repeats, 4D-ACFNet 1 repeat x
3 epochs, with the recurrence residual from a DFS Cox fit and the heads started at the anchor:
see ``ACFNet.anchor_clinical``; seed 0; 2 shared CPU cores):

==========================================  =============  =============  =====  =====  ======
Harrell C (mean over repeats, pooled OOF)   acfnet         censored       Cox    RSF    oracle
==========================================  =============  =============  =====  =====  ======
OS                                          0.560          0.558          0.557  0.558  0.602
DFS                                         0.658          0.660          0.651  0.647  0.664
==========================================  =============  =============  =====  =====  ======

With 95% intervals (200 bootstrap replicates; the notebook's 500 give slightly different
bounds, the same estimates): OS 4D-ACFNet 0.560 [0.492, 0.615], censoring-aware 0.558 [0.494,
0.612], Cox 0.557 [0.500, 0.614], RSF 0.558 [0.511, 0.605], oracle 0.602 [0.543, 0.669], Fong
0.532; DFS 0.658 [0.613, 0.699], 0.660 [0.615, 0.704], 0.651 [0.607, 0.696], 0.647 [0.603,
0.690], oracle 0.664 [0.612, 0.714], Fong 0.577. Paired difference 4D-ACFNet - Cox (repeat 0,
the one repeat both have, so not the difference of the means above): OS +0.001 [-0.029, 0.029],
DFS -0.010 [-0.028, 0.006]; censoring-aware - Cox OS -0.001 [-0.028, 0.022], DFS -0.007
[-0.026, 0.010]. The anchors' rows equal notebook 06's to the last digit, which checks that
this script runs the manuscript's protocol. 4D-ACFNet ties the Cox model within noise on both
heads and sits 0.042 under the oracle (OS). Wall time 2263 s for the two 4D-ACFNet objectives,
the four anchors and the bootstrap on a 2-core machine shared with three other jobs (2.2-3.5
min per 3-epoch fold). Earlier forms of the model and of this script: ``docs/performance.md``.

Epochs and repeats (``--epochs``/``--repeats``, bootstrap 0, estimates only; NOT the
manuscript's protocol): OS / DFS Harrell C of 4D-ACFNet (papers' CE) 0.561 / 0.660 at 5 epochs
(90 s on an idle machine, the anchors included), 0.554 / 0.658 at 8 epochs (censoring-aware
0.557 / 0.660); with 3 repeats x 3 epochs the mean over repeats is 0.552 / 0.652 (papers' CE)
and 0.557 / 0.653 (censoring-aware) against Cox 0.557 / 0.651, 197 s for the 20 extra fits and
the anchors. So the one-repeat 0.560 is within the repeat-to-repeat spread: 4D-ACFNet ties
the Cox model, it does not reliably beat it. A 3-repeat CV of every image model of notebook 06
would add ~3-5 min on an idle machine, more than the ~2 min budget; the profile keeps 1 repeat
and the CV intervals stay conditional on the fitted models.
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
