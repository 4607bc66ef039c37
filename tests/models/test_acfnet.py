"""4D-ACFNet / STAR (crlm_lib/models/acfnet.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crlm_lib.evaluation.specs import PUBLISHED_OPTIONS
from crlm_lib.losses import total_loss
from crlm_lib.models import build_model, separable_param_counts
from crlm_lib.models.acfnet import ACFNet
from crlm_lib.models.common import TimeEmbeddedConv
from crlm_lib.models.heads import cumulative_recurrence_logits, head_probabilities


def test_time_embedded_conv_efficient_equals_copies_including_borders():
    torch.manual_seed(0)
    conv = TimeEmbeddedConv(3, 2, 4)
    x = torch.randn(2, 3, 2, 3, 5)
    e_t = torch.randn(12, 2)
    fast = conv(x, e_t, efficient=True)
    slow = conv(x, e_t, efficient=False)
    assert fast.shape == (2, 12, 4, 2, 3, 5)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    # between patients the time term cancels: the difference is the same for every t
    between = fast[0, :, :, 1, 1, 2] - fast[1, :, :, 1, 1, 2]
    assert between.std(0).abs().max() < 1e-5
    # between timesteps the time term differs at a corner from the interior (zero padding)
    d_t = fast[0] - fast[0, :1]
    assert not torch.allclose(d_t[..., 0, 0, 0], d_t[..., 1, 1, 2], atol=1e-3)


def test_efficient_and_straightforward_acfnet_give_equal_outputs(smoke_cfg, make_batch):
    torch.manual_seed(0)
    fast = ACFNet(6, smoke_cfg, efficient=True).eval()
    slow = ACFNet(6, smoke_cfg, efficient=False).eval()
    slow.load_state_dict(fast.state_dict())
    batch = make_batch(2)
    with torch.no_grad():
        a, b = fast(batch), slow(batch)
    for key in ("recurrence_logits", "survival_logits"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    for key in ("attention", "reconstruction", "h_img", "h_recon"):
        torch.testing.assert_close(a["aux"][key], b["aux"][key], rtol=1e-4, atol=1e-5)


def test_aux_shapes_attention_and_gradcam_layer(smoke_cfg, make_batch):
    model = build_model("acfnet", 6, smoke_cfg)
    seen = {}
    model.gradcam_layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    out = model(make_batch(2))
    aux = out["aux"]
    assert aux["attention"].shape == (2, 12)
    torch.testing.assert_close(aux["attention"].sum(1), torch.ones(2))
    assert aux["reconstruction"].shape == (2, 12, 1, 4, 8, 8)
    for key in ("h_img", "h_clin", "h_recon"):
        assert aux[key].shape == (2, smoke_cfg.embed_dim)
    assert set(aux["loss_terms"]) == {"align", "dis", "burden", "intensity"}
    # spatiotemporal Grad-CAM layer keeps T explicit: [B, C, T, d, h, w]
    assert seen["out"].shape == (2, 4 * smoke_cfg.width, 12, 2, 4, 4)


def test_ablation_switches_remove_terms_and_modules(smoke_cfg, make_batch):
    batch = make_batch(2)
    plain = build_model("acfnet", 6, smoke_cfg, attention4d=False, reconstruction=False,
                        align=False, disentangle=False, burden_target=False,
                        intensity_target=False)  # fmt: skip
    out = plain(batch)
    assert out["aux"]["loss_terms"] == {}
    assert "attention" not in out["aux"] and "h_recon" not in out["aux"]
    only_b = build_model("acfnet", 6, smoke_cfg, attention4d=False, reconstruction=False,
                         disentangle=False)  # fmt: skip
    assert set(only_b(batch)["aux"]["loss_terms"]) == {"align", "burden", "intensity"}
    no_a = build_model("acfnet", 6, smoke_cfg, attention4d=False)
    out = no_a(batch)
    assert out["aux"]["reconstruction"].shape[1] == 1  # T = 1 without time
    assert set(out["aux"]["loss_terms"]) == {"align", "dis", "burden", "intensity"}
    with_recon = build_model("acfnet", 6, smoke_cfg, recon_loss=True)
    assert "recon" in with_recon(batch)["aux"]["loss_terms"]


def test_star_uses_normalised_alignment_and_its_lambdas(smoke_cfg, make_batch):
    from crlm_lib.losses import star_alignment_loss

    torch.manual_seed(0)
    model = build_model(
        "star",
        6,
        smoke_cfg,
        lambdas=(1.0, 2.0, 3.0, 4.0),
        burden_target=False,
        intensity_target=False,
    ).eval()
    batch = make_batch(2)
    out = model(batch)
    aux = out["aux"]
    expected = star_alignment_loss(aux["h_img"], aux["h_clin"], aux["h_recon"])
    torch.testing.assert_close(aux["loss_terms"]["align"], expected)
    assert aux["loss_weights"] == {"surv": 1.0, "recur": 2.0, "align": 3.0, "dis": 4.0}
    loss, parts = total_loss(out, batch)
    manual = sum(w * parts[k] for k, w in aux["loss_weights"].items())
    assert abs(float(loss.detach()) - manual) < 1e-4


def test_disentanglement_at_batch_size_one_is_finite_with_gradient(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model("acfnet", 6, smoke_cfg).train()
    for seed in range(4):  # fill the memory bank with B = 1 steps
        model(make_batch(1, seed=seed))
    out = model(make_batch(1, seed=9))
    dis = out["aux"]["loss_terms"]["dis"]
    assert torch.isfinite(dis) and dis > 0
    dis.backward()
    grad = model.clin_encoder.net[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_separable_parameter_counts():
    c = separable_param_counts(64, 64, 8)
    assert c["separable"] == 27 * 72 * 64 + 3 * 64 * 64 == 136_704
    assert c["two_3d"] == 27 * 72 * 64 + 27 * 64 * 64
    assert c["full_4d"] == 81 * 72 * 64
    assert abs(c["reduction_vs_two_3d"] - 0.418) < 1e-3  # the paper's "41%"
    assert abs(separable_param_counts(16, 16)["reduction_vs_two_3d"] - 24 / 54) < 1e-9


def test_image_only_base_row_ignores_clinical_input(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model("acfnet", 6, smoke_cfg, attention4d=False, reconstruction=False,
                        clinical=False, align=False, disentangle=False).eval()  # fmt: skip
    batch = make_batch(2)
    other = dict(batch, clinical=batch["clinical"] + 5.0)
    with torch.no_grad():
        a, b = model(batch), model(other)
    torch.testing.assert_close(a["survival_logits"], b["survival_logits"])
    assert model.clin_encoder.net is None and model.clin_residual is None
    with torch.no_grad():  # the clinical model does read it
        fused = build_model("acfnet", 6, smoke_cfg, attention4d=False, reconstruction=False)
        fused.clin_residual.weight.fill_(0.5)
        diff = fused(batch)["survival_logits"] - fused(other)["survival_logits"]
    assert diff.abs().max() > 1e-3
    with pytest.raises(ValueError, match="image-only"):
        build_model("acfnet", 6, smoke_cfg, clinical=False)


def test_monitor_logs_agreement_and_xcorr_mode(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model("star", 6, smoke_cfg, dis_mode="xcorr").train()
    out = model(make_batch(4))
    aux = out["aux"]
    cos = torch.nn.functional.cosine_similarity(aux["h_img"], aux["h_recon"], dim=1).mean()
    assert float(aux["monitor"]["cos_img_recon"]) == pytest.approx(float(cos.detach()), abs=1e-6)
    _, parts = total_loss(out, make_batch(4))
    assert "cos_img_recon" in parts and "cos_img_clin" in parts
    assert "cos_img_recon" not in aux["loss_terms"]  # logged, not optimised
    assert float(aux["loss_terms"]["dis"].detach()) > 1e-2  # O(1), not ~1e-4 as Eq. (4)
    with pytest.raises(ValueError, match="dis_mode"):
        build_model("acfnet", 6, smoke_cfg, dis_mode="cov")


def test_anchor_clinical_ranks_like_cox(smoke_cfg, make_batch):
    from crlm_lib.metrics import risk_from_survival

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    hazard = np.exp(1.5 * x[:, 0])  # only feature 0 matters; higher = earlier death
    years = rng.exponential(3.0 / hazard)
    event = (rng.uniform(size=120) < 0.8).astype(float)
    torch.manual_seed(0)
    model = build_model("acfnet", 6, smoke_cfg).eval()
    beta = model.anchor_clinical(x, years, event)
    assert beta[0] > 1.0 and np.abs(beta[1:]).max() < 0.5 * beta[0]
    batch = make_batch(2)
    lo, hi = torch.zeros(2, 6), torch.zeros(2, 6)
    lo[:, 0], hi[:, 0] = -2.0, 2.0
    with torch.no_grad():
        p_lo = head_probabilities(model(dict(batch, clinical=lo)))[0].numpy()
        p_hi = head_probabilities(model(dict(batch, clinical=hi)))[0].numpy()
    assert (risk_from_survival(p_hi) > risk_from_survival(p_lo) + 0.5).all()
    papers = build_model("acfnet", 6, smoke_cfg, clinical_residual=False)
    assert papers.anchor_clinical(x, years, event) is None


def test_anchor_clinical_recurrence_residual_and_anchored_start(smoke_cfg, make_batch):
    from crlm_lib.metrics import risk_from_recurrence, risk_from_survival

    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 6))
    years = rng.exponential(3.0 / np.exp(1.2 * x[:, 0]))  # OS: feature 0
    dfs = rng.exponential(1.5 / np.exp(1.2 * x[:, 1]))  # DFS: feature 1
    event, dfs_event = np.ones(150), (rng.uniform(size=150) < 0.8).astype(float)
    torch.manual_seed(0)
    model = build_model("acfnet", 6, smoke_cfg).eval()
    model.anchor_clinical(x, years, event, dfs_years=dfs, dfs_event=dfs_event)
    v = model.anchor_betas["dfs"]
    assert v[1] > 0.8 and np.abs(np.delete(v, 1)).max() < 0.5 * v[1]
    batch = make_batch(8)
    with torch.no_grad():
        out = model(dict(batch, clinical=torch.as_tensor(x[:8], dtype=torch.float32)))
    # anchored start: the prediction is the KM baseline shifted by the two Cox predictors, so
    # both heads rank exactly as the Cox linear predictors, whatever the image
    os_lp, dfs_lp = x[:8] @ model.anchor_betas["os"], x[:8] @ v
    pmf, _, rec = (t.numpy() for t in head_probabilities(out))
    surv_risk = risk_from_survival(pmf)
    rec_risk = risk_from_recurrence(rec)
    assert (np.argsort(surv_risk) == np.argsort(os_lp)).all()
    assert (np.argsort(rec_risk) == np.argsort(dfs_lp)).all()
    base = torch.sigmoid(cumulative_recurrence_logits(model.heads.recurrence[-1].bias))
    base = base.detach().numpy()
    assert (np.diff(base) >= 0).all() and 0.3 < base[1] < 0.95  # KM cumulative DFS events
    # without the anchored start the random heads add patient-specific noise to that ranking
    torch.manual_seed(0)
    noisy = build_model("acfnet", 6, smoke_cfg, anchored_start=False).eval()
    noisy.anchor_clinical(x, years, event, dfs_years=dfs, dfs_event=dfs_event)
    assert float(noisy.heads.survival[-1].weight.abs().sum()) > 0
    # the papers' network has neither residual
    papers = build_model("acfnet", 6, smoke_cfg, clinical_residual=False)
    assert papers.clin_residual_rec is None
    assert papers.anchor_clinical(x, years, event, dfs_years=dfs, dfs_event=dfs_event) is None


def test_mask_channels_and_burden_target(smoke_cfg, make_batch):
    """The default network reads the liver and tumour masks beside the CT (the stem has three
    input channels) and learns the window's SEG burden; the papers' network reads the CT alone."""
    from crlm_lib.models.acfnet import window_burden

    batch = make_batch(2)
    model = build_model("acfnet", 6, smoke_cfg)
    assert model.stem.blocks[0][0].in_channels == 3 and model.mask_channels == (0, 4)
    out = model(batch)
    expected = torch.nn.functional.huber_loss(
        model.burden_head(out["aux"]["h_img"]).squeeze(1), window_burden(batch["masks"])
    )
    torch.testing.assert_close(out["aux"]["loss_terms"]["burden"], expected)
    papers = build_model("acfnet", 6, smoke_cfg, **PUBLISHED_OPTIONS)
    assert papers.stem.blocks[0][0].in_channels == 1 and papers.burden_head is None
    masks = torch.zeros(1, 5, 2, 2, 2)
    masks[0, 0] = 1.0  # 8 liver voxels
    masks[0, 4, 0, 0, :] = 1.0  # 2 tumour voxels
    torch.testing.assert_close(window_burden(masks), torch.log(torch.tensor([3.0 / 9.0])))
    with pytest.raises(ValueError, match="unknown mask channels"):
        build_model("acfnet", 6, smoke_cfg, mask_channels=("spleen",))


def test_window_intensity_is_the_masked_mean_and_sd_of_the_ct():
    from crlm_lib.models.acfnet import INTENSITY_SCALE, window_intensity

    ct = torch.zeros(2, 1, 2, 2, 2)
    ct[0, 0, 0, 0, :] = torch.tensor([0.2, 0.4])
    masks = torch.zeros(2, 5, 2, 2, 2)
    masks[0, 4, 0, 0, :] = 1.0  # patient 0: two tumour voxels (0.2, 0.4)
    masks[1, 4, 1, 1, 1] = 1.0  # patient 1: one voxel only -> no target
    stats, has = window_intensity(ct, masks)
    expected = torch.tensor([0.3, 0.1]) * INTENSITY_SCALE
    torch.testing.assert_close(stats[0], expected)
    torch.testing.assert_close(has, torch.tensor([1.0, 0.0]))


def test_lesion_pooling_reads_the_tumour_and_is_off_in_the_published_network(smoke_cfg, make_batch):
    batch = make_batch(2)
    model = build_model("acfnet", 6, smoke_cfg).eval()
    assert model.lesion_pool is not None and model.intensity_head is not None
    papers = build_model("acfnet", 6, smoke_cfg, **PUBLISHED_OPTIONS)
    assert papers.lesion_pool is None and papers.intensity_head is None

    # The pooled descriptor changes when only the CT inside the tumour mask changes.
    def pooled(ct):
        x = torch.cat([ct, 2 * batch["masks"][:, [0, 4]] - 1], 1)
        level = [torch.cat([ct, ct * ct], 1), *model.stem.forward_all(x)[:2]]
        return model.lesion_pool(level, batch["masks"])

    inside = batch["ct"].clone()
    inside[batch["masks"][:, 4:5] > 0] += 0.5
    base, moved = pooled(batch["ct"]), pooled(inside)
    assert (moved - base).abs().max() > 1e-4
    no_masks = {k: v for k, v in batch.items() if k != "masks"}
    lone = build_model("acfnet", 6, smoke_cfg, mask_channels=())
    with pytest.raises(ValueError, match="lesion_pooling"):
        lone(no_masks)


def test_calibrate_image_standardises_the_descriptor_on_the_given_patients(smoke_cfg, make_batch):
    from crlm_lib.models.acfnet import _pool_inputs
    from crlm_lib.models.common import image_input

    torch.manual_seed(0)
    model = build_model("acfnet", 6, smoke_cfg)
    batches = [make_batch(3), make_batch(3)]
    rows = model.calibrate_image(batches)
    assert rows.shape == (6, 5) and model.training
    pool = model.lesion_pool
    with torch.no_grad():
        desc = torch.cat(
            [
                pool.descriptor(
                    _pool_inputs(
                        x := image_input(b, model.mask_channels), model.stem.forward_all(x)
                    ),
                    b["masks"],
                )
                for b in batches
            ]
        )
    z = (desc - pool.shift) / pool.scale
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4, rtol=0)
    varying = desc.std(0) > 1e-3
    torch.testing.assert_close(z.std(0)[varying], torch.ones(int(varying.sum())))
    assert "lesion_pool.shift" in model.state_dict()  # saved with the checkpoint
    assert "lesion_anchor.shift" in model.state_dict()
    # the returned rows are the lesion summaries standardised on the same patients
    np.testing.assert_allclose(rows.mean(0), 0.0, atol=1e-5)
    papers = build_model("acfnet", 6, smoke_cfg, **PUBLISHED_OPTIONS)
    assert papers.lesion_pool is None and papers.lesion_anchor is None
    assert papers.calibrate_image(batches) is None


def test_lesion_anchor_starts_the_network_as_a_clinical_radiological_cox_model(
    smoke_cfg, make_batch
):
    from crlm_lib.data.lesions import FEATURE_NAMES
    from crlm_lib.metrics import risk_from_survival

    n = 160
    batches = [make_batch(16, seed=s) for s in range(n // 16)]
    torch.manual_seed(0)
    model = build_model("acfnet", 6, smoke_cfg).eval()
    rows = model.calibrate_image(batches)
    # death hazard from the lesions' mean HU only (the 3rd summary entry): darker = worse
    hu = rows[:, 2]
    rng = np.random.default_rng(0)
    years = rng.exponential(3.0 / np.exp(-1.2 * hu))
    x = rng.normal(size=(n, 6))
    model.anchor_clinical(x, years, np.ones(n), dfs_years=years, dfs_event=np.ones(n), image=rows)
    w_img = model.lesion_anchor.os.weight.detach().numpy().ravel()
    assert w_img[2] < -0.8 and np.abs(np.delete(w_img, 2)).max() < 0.5 * abs(w_img[2])
    assert np.abs(model.clin_residual.weight.detach().numpy()).max() < 0.5 * abs(w_img[2])
    # step 0 ranks as the joint Cox linear predictor, and a darker lesion set raises the risk
    batch = batches[0]
    with torch.no_grad():
        out = model(dict(batch, clinical=torch.as_tensor(x[:16], dtype=torch.float32)))
    lp = x[:16] @ model.anchor_betas["os"][:6] + rows[:16] @ w_img
    risk = risk_from_survival(head_probabilities(out)[0].numpy())
    assert (np.argsort(risk) == np.argsort(lp)).all()
    darker = dict(batch, lesion_features=batch["lesion_features"].clone())
    darker["lesion_features"][..., FEATURE_NAMES.index("mean")] -= 2.0
    with torch.no_grad():
        risk_dark = risk_from_survival(head_probabilities(model(darker))[0].numpy())
        risk_own = risk_from_survival(head_probabilities(model(batch))[0].numpy())
    assert (risk_dark > risk_own).all()
    no_lesions = {k: v for k, v in batch.items() if k != "lesion_features"}
    with pytest.raises(ValueError, match="lesion_anchor"):
        model(no_lesions)


def test_heads_train_at_a_scaled_learning_rate_except_in_the_published_network(smoke_cfg):
    from crlm_lib.train import build_optimizer

    model = build_model("acfnet", 6, smoke_cfg)
    opt = build_optimizer(model, lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    heads = {id(p) for p in model.heads.parameters()}
    assert {id(p) for p in opt.param_groups[1]["params"]} == heads
    n_all = sum(1 for _ in model.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == n_all
    papers = build_model("acfnet", 6, smoke_cfg, **PUBLISHED_OPTIONS)
    assert [g["lr"] for g in build_optimizer(papers, lr=1e-3).param_groups] == [1e-3]


def test_options_object_and_keywords_build_the_same_network(smoke_cfg):
    from crlm_lib.models.acfnet import ACFNetOptions

    torch.manual_seed(0)
    by_keyword = ACFNet(6, smoke_cfg, attention4d=False, reconstruction=False, dis_mode="xcorr")
    torch.manual_seed(0)
    opts = ACFNetOptions(attention4d=False, reconstruction=False, dis_mode="xcorr")
    by_object = ACFNet(6, smoke_cfg, opts)
    a, b = by_keyword.state_dict(), by_object.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert by_object.options == by_keyword.options == opts
    # keywords override the fields of a given options object
    assert ACFNet(6, smoke_cfg, opts, align=False).options.align is False


def test_published_options_read_back_from_run_json_build_the_published_network(smoke_cfg):
    import json

    stored = json.loads(json.dumps(PUBLISHED_OPTIONS))  # as run.json keeps them: lists
    model = build_model("acfnet", 6, smoke_cfg, **stored)
    assert model.options.mask_channels == () and model.clin_residual is None
    assert model.lesion_pool is None and model.burden_head is None
    assert model.heads.survival_classes == "published12"


def test_options_are_validated_with_the_offending_value(smoke_cfg):
    with pytest.raises(ValueError, match="spleen"):
        ACFNet(6, smoke_cfg, mask_channels=("liver", "spleen"))
    with pytest.raises(ValueError, match="align=False"):
        ACFNet(6, smoke_cfg, clinical=False)
    with pytest.raises(ValueError, match="cosine"):
        ACFNet(6, smoke_cfg, dis_mode="cosine")
    with pytest.raises(TypeError, match="attention_4d"):
        ACFNet(6, smoke_cfg, attention_4d=False)
