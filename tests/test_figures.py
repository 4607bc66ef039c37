"""Figures (crlm_lib/figures.py): the agreement plot reads the logged diagnostics."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from crlm_lib import figures  # noqa: E402


def test_read_histories_and_plot_modality_agreement(tmp_path):
    hist = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_cos_img_recon": [0.9, 0.8, 0.7],
            "val_cos_img_recon": [0.85, 0.75, 0.65],
            "train_cos_img_clin": [0.1, 0.5, 0.9],
        }
    )
    run = tmp_path / "paper_split" / "seed0" / "star"
    run.mkdir(parents=True)
    hist.to_csv(run / "history.csv", index=False)
    got = figures.read_histories(tmp_path, ["acfnet", "star"], seed=0)
    assert list(got) == ["star"]  # missing runs are skipped
    fig = figures.plot_modality_agreement(got)
    left, right = fig.axes
    plotted = [line.get_ydata() for line in left.lines if len(line.get_xdata()) == 3]
    assert any(np.allclose(y, [0.9, 0.8, 0.7]) for y in plotted)
    assert any(np.allclose(y, [0.1, 0.5, 0.9]) for y in (ln.get_ydata() for ln in right.lines))
    assert left.get_ylim() == (-1.05, 1.05)
