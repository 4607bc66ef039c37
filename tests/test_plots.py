"""The one plotting module (crlm_lib/plots.py): data-side, explanation and report figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from crlm_lib import explain, figures, plots  # noqa: E402
from crlm_lib.config import N_YEARS  # noqa: E402


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


def test_montage_renders_with_twelve_panels_and_a_colour_bar(tmp_path):
    ct = np.zeros((8, 16, 16), np.float32)
    masks = np.zeros((5, 8, 16, 16), np.float32)
    masks[0, 1:, :, :15] = 1.0  # liver
    masks[4, 2:6, 2:7, 2:7] = 1.0  # tumour on slices 2..5
    maps = np.random.default_rng(0).random((N_YEARS, 8, 16, 16)).astype(np.float32)
    fig = plots.plot_yearly_montage(ct, maps, masks)
    assert len(fig.axes) == N_YEARS + 1
    titles = [ax.get_title() for ax in fig.axes[:N_YEARS]]
    assert titles[0] == "Year 1" and titles[-1] == "Year 12"
    assert fig.axes[-1].get_ylabel() == "Grad-CAM (normalised)"
    # default slice = most tumour (rows 2..5 have the tumour; ties -> first)
    assert "axial slice 2" in fig._suptitle.get_text()
    fig.savefig(tmp_path / "montage.png")
    assert (tmp_path / "montage.png").stat().st_size > 1000
    plt.close(fig)


def test_patient_curves_and_attention_render(tmp_path):
    row = {f"rec_p{k}": min(1.0, 0.1 * k) for k in range(1, 13)}
    row.update({f"surv_p{k}": 1.0 / 12 for k in range(1, 13)})
    row.update(patient_id="CRLM-CT-9001", os_years=4.2, os_event=0, dfs_years=1.5, dfs_event=1)
    fig = plots.plot_patient_curves(pd.Series(row))
    assert len(fig.axes) == 2
    assert all(ax.get_xlabel() == "Years after resection" for ax in fig.axes)
    fig.savefig(tmp_path / "curves.png")
    plt.close(fig)

    attn = np.random.default_rng(0).dirichlet(np.ones(N_YEARS), size=10)
    df = pd.DataFrame(attn, columns=[f"att_{k}" for k in range(1, 13)])
    for source in (attn, df):
        fig = plots.attention_over_years(source)
        assert len(fig.axes) == 2  # mean ± SD, and the SD across patients on a log scale
        line = fig.axes[0].lines[0]
        np.testing.assert_allclose(line.get_ydata(), attn.mean(axis=0))
        sd = fig.axes[1].lines[0].get_ydata()
        np.testing.assert_allclose(sd, attn.std(axis=0, ddof=1))
        assert fig.axes[1].get_yscale() == "log"
        fig.savefig(tmp_path / "attn.png")
        plt.close(fig)


def test_heatmap_slice_falls_back_from_tumour_to_liver_to_heat():
    masks = np.zeros((5, 6, 4, 4))
    heat = np.zeros((2, 6, 4, 4))
    assert plots.heatmap_slice(masks, heat, empty=3) == 3
    heat[:, 4] = 1.0
    assert plots.heatmap_slice(masks, heat, empty=3) == 4
    masks[0, 1] = 1.0
    assert plots.heatmap_slice(masks, heat, empty=3) == 1
    masks[4, 5, 0, 0] = 1.0
    assert plots.heatmap_slice(masks, heat, empty=3) == 5


def test_former_homes_re_export_the_same_functions():
    assert figures.plot_masks_overlay is plots.plot_masks_overlay
    assert explain.plot_yearly_montage is plots.plot_yearly_montage
    with pytest.raises(explain.ExplainError, match="att_1"):
        plots.attention_over_years(pd.DataFrame({"x": [1.0]}))
