"""Reduced cross-validation: 4D-ACFNet vs the clinical Cox model vs the oracle (OS Harrell C).

The full repeated CV of notebook 06 takes ~12 minutes on the cpu profile; this script runs the
same protocol (``evaluation.run_cv_protocol``: stratified folds, a 10% inner validation split for
early stopping, the cpu profile's image-model epochs) with one repeat and a small bootstrap, so
that a change to the model or the loss can be judged in a few minutes.

Usage (build the cohort first: ``python -m crlm_lib.cli data --profile cpu``)::

    nice -n 10 python benchmarks/acfnet_vs_cox.py                  # acfnet, acfnet:censored
    nice -n 10 python benchmarks/acfnet_vs_cox.py --models acfnet:censored --folds 5
    nice -n 10 python benchmarks/acfnet_vs_cox.py --option clinical_residual=false

Prints one line per model: OS Harrell C of the pooled out-of-fold predictions (and its
bootstrap 95% CI). Synthetic cohort: numbers are about the synthetic generator, not patients.

Measured (cpu profile, 197 synthetic patients, 5 folds x 1 repeat, 3 epochs, seed 0, 2 shared
CPU cores):

=====================================================  ======  ======  =====  ======
OS Harrell C (pooled out-of-fold)                      acfnet  censor  Cox    oracle
=====================================================  ======  ======  =====  ======
before (papers' network, random start)                 0.571   --      0.611  0.654
after (Cox-anchored clinical residual, issue 10)       0.617   0.621   0.611  0.654
=====================================================  ======  ======  =====  ======

("censor" = ``acfnet:censored``, the discrete-time likelihood; the "before" run predates the
residual, so it has no censored row.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace

from crlm_lib.config import get_profile, resolve_paths
from crlm_lib.evaluation import ModelSpec, as_cohort, run_cv_protocol


def _spec(token: str, options: dict) -> ModelSpec:
    name, _, objective = token.partition(":")
    objective = objective or "paper"
    label = f"{name}-{objective}" if objective != "paper" else name
    return ModelSpec(name, label, objective=objective, options=dict(options))


def _value(text: str):
    try:
        return json.loads(text.lower() if text.lower() in ("true", "false") else text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--models", nargs="+", default=["acfnet", "acfnet:censored"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    ap.add_argument("--boot", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--option", action="append", default=[], help="KEY=VALUE model option")
    ap.add_argument("--runs-dir", default=None, help="default: a fresh temporary folder")
    args = ap.parse_args(argv)

    prof = get_profile(args.profile)
    ev = replace(prof.eval, cv_folds=args.folds, cv_repeats=1, cv_repeats_3d=1)
    if args.epochs is not None:
        ev = replace(ev, cv_epochs_3d=args.epochs)
    prof = prof.with_(eval=ev)
    options = dict(kv.split("=", 1) for kv in args.option)
    options = {k: _value(v) for k, v in options.items()}
    specs = [_spec(m, options) for m in args.models]
    cohort = as_cohort(resolve_paths(prof))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = run_cv_protocol(
            specs,
            cohort,
            prof,
            seed=args.seed,
            anchors=("cox",),
            oracle=True,
            baselines=(),
            n_boot=args.boot,
            ci_heads=("os",),
            runs_dir=args.runs_dir or tmp,
        )
    tidy = res.tidy
    rows = tidy[tidy["metric"] == "os_c_harrell"]
    print(
        f"{args.profile} profile, {len(cohort.ids)} patients, {args.folds}-fold x 1 repeat, "
        f"epochs {ev.cv_epochs_3d}, options {options or '{}'}, {time.perf_counter() - t0:.0f} s"
    )
    for _, r in rows.iterrows():
        lo, hi = r.get("low", float("nan")), r.get("high", float("nan"))
        print(f"  {r['model']:<22s} OS Harrell C {r['estimate']:.3f}  [{lo:.3f}, {hi:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
