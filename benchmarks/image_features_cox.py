"""Which image summary a Cox model can use: the network's crop or the lesions at source resolution.

4D-ACFNet reads a 16x32x32 crop (cpu profile) of the CT, equalised and mapped to [-1, 1]. Its
lesion anchor (``models.common.LesionAnchor``) instead summarises the lesion set measured on the
SEG's tumour segments at the CT's source resolution. This script shows why: ridge Cox models
(lifelines, penalty 0.1, features standardised on each training fold) of the clinical vector
alone, plus the crop's statistics (tumour mean and SD of the CT, a tumour-present flag, liver
mean, the crop's tumour burden, log tumour voxels), plus the lesion anchor's summary
(``models.common.lesion_summary``, the exact inputs of the anchor), and plus the SEG volumetrics
and first-order HU of the ``cox_clinrad`` anchor, each in notebook 06's folds (5 x 5 repeated
stratified CV, seed 0), Harrell's C of the pooled out-of-fold linear predictor averaged over
the repeats.

Usage (build the cohort first: ``python -m crlm_lib.cli data --profile cpu``)::

    nice -n 10 python benchmarks/image_features_cox.py [--profile cpu] [--seed 0]

Prints Harrell's C of OS and DFS of each Cox model. A cpu-profile run: ``docs/performance.md``,
"Which image summary a Cox model can use".

Synthetic cohort: the numbers are about the generator, not patients.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def _crop_statistics(batch) -> np.ndarray:
    import torch

    from crlm_lib.config import MASK_NAMES
    from crlm_lib.models.acfnet import window_burden, window_intensity

    ct, masks = batch["ct"].float(), batch["masks"].float()
    stats, has = window_intensity(ct, masks)
    liver = masks[:, MASK_NAMES.index("liver")]
    liver_mean = (ct[:, 0] * liver).sum((1, 2, 3)) / liver.sum((1, 2, 3)).clamp(min=1)
    voxels = masks[:, MASK_NAMES.index("tumour")].sum((1, 2, 3))
    cols = [stats[:, 0], stats[:, 1], has, liver_mean, window_burden(masks), torch.log1p(voxels)]
    return torch.stack(cols, 1).numpy()


def _features(cohort, profile) -> dict[str, np.ndarray]:
    from torch.utils.data import DataLoader

    from crlm_lib.data.dataset import CRLMDataset, collate
    from crlm_lib.data.preprocess import tumour_first_order, volumetrics
    from crlm_lib.models.common import lesion_summary

    ids = list(cohort.ids)
    pdir = cohort.paths.processed_dir
    ds = CRLMDataset(pdir, cohort.clinical, ids, profile, clinical_reference_ids=ids)
    crop, lesions = [], []
    for batch in DataLoader(ds, batch_size=32, collate_fn=collate):
        crop.append(_crop_statistics(batch))
        lesions.append(lesion_summary(batch["lesion_features"], batch["lesion_mask"]).numpy())
    first = tumour_first_order(pdir, ids)
    radiomics = np.hstack([volumetrics(pdir, ids).to_numpy(float), first.fillna(first.mean())])
    clin = np.asarray(ds.clinical, float)
    return {
        "clinical vector": clin,
        "clinical + crop statistics": np.hstack([clin, np.concatenate(crop)]),
        "clinical + lesion summary (the anchor's)": np.hstack([clin, np.concatenate(lesions)]),
        "clinical + SEG volumetrics + tumour HU": np.hstack([clin, radiomics]),
    }


def _cv_c(x: np.ndarray, years, event, ids, strata, seed: int, folds=5, repeats=5) -> float:
    from lifelines import CoxPHFitter
    from sksurv.metrics import concordance_index_censored

    from crlm_lib.data.dataset import repeated_stratified_kfold

    index = {pid: j for j, pid in enumerate(ids)}
    lp = np.zeros((repeats, len(ids)))
    for rep, _, tr, te in repeated_stratified_kfold(ids, strata, folds, repeats, seed):
        itr, ite = [index[i] for i in tr], [index[i] for i in te]
        mu, sd = x[itr].mean(0), x[itr].std(0)
        keep = sd > 1e-8
        z = (x[:, keep] - mu[keep]) / sd[keep]
        frame = pd.DataFrame(z[itr])
        frame["T"], frame["E"] = np.maximum(years[itr], 1e-6), event[itr]
        cph = CoxPHFitter(penalizer=0.1).fit(frame, "T", "E")
        lp[rep, ite] = z[ite] @ cph.params_.to_numpy()
    c = [concordance_index_censored(event.astype(bool), years, lp[r])[0] for r in range(repeats)]
    return float(np.mean(c))


def main(argv: list[str] | None = None) -> int:
    from crlm_lib.config import get_profile
    from crlm_lib.pipeline import load_study

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    profile = get_profile(args.profile)
    cohort = load_study(profile, seed=args.seed)
    ids = list(cohort.ids)
    out = cohort.outcomes.loc[ids]
    strata = out["os_event"].to_numpy()
    print(f"{profile.name} profile, {len(ids)} patients, 5 x 5 CV, seed {args.seed}")
    print(f"  {'Cox model of':<44s} {'OS C':>6s} {'DFS C':>6s}")
    for name, x in _features(cohort, profile).items():
        cs = [
            _cv_c(x, out[f"{h}_years"].to_numpy(float), out[f"{h}_event"].to_numpy(float),
                  ids, strata, args.seed)
            for h in ("os", "dfs")
        ]  # fmt: skip
        print(f"  {name:<44s} {cs[0]:>6.3f} {cs[1]:>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
