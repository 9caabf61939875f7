"""eo_common.metrics against independent references: scikit-image, scikit-learn, scipy, torchmetrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from eo_common.metrics import (
    ImageQualityMetrics,
    SegmentationMetrics,
    SpearmanRho,
    kappa_from_confusion,
    mcc_from_confusion,
    psnr,
    sam,
    ssim,
)
from scipy.stats import spearmanr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    jaccard_score,
    matthews_corrcoef,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)
from torchmetrics.functional.image import (
    spectral_angle_mapper,
    structural_similarity_index_measure,
)
from torchmetrics.image import PeakSignalNoiseRatio

SKIMAGE_SSIM = dict(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0
)


def _image_batches(seed=0, n_batches=3, b=2, c=4, size=24, dtype=torch.float64):
    """Targets in [0, 1] and predictions with a different error level per batch."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(n_batches):
        target = torch.rand(b, c, size, size, generator=g, dtype=dtype)
        noise = 0.02 * (i + 1) ** 2 * torch.randn(b, c, size, size, generator=g, dtype=dtype)
        batches.append(((target + noise).clamp(0, 1), target))
    return batches


# ------------------------------------------------------------------------------------------- PSNR


def test_psnr_is_split_wide_and_matches_skimage_and_torchmetrics():
    batches = _image_batches()
    metric = ImageQualityMetrics()
    reference = PeakSignalNoiseRatio(data_range=1.0)
    for pred, target in batches:
        metric.update(pred, target)
        reference.update(pred, target)
    out = metric.compute()
    pred_all = torch.cat([p for p, _ in batches]).numpy()
    target_all = torch.cat([t for _, t in batches]).numpy()
    expected = peak_signal_noise_ratio(target_all, pred_all, data_range=1.0)
    assert out["psnr"] == pytest.approx(expected, abs=1e-9)
    assert out["psnr"] == pytest.approx(float(reference.compute()), abs=1e-6)
    assert psnr(torch.from_numpy(pred_all), torch.from_numpy(target_all)) == pytest.approx(expected)
    # the average of per-batch PSNRs is a different (wrong) number here
    per_batch = np.mean(
        [peak_signal_noise_ratio(t.numpy(), p.numpy(), data_range=1.0) for p, t in batches]
    )
    assert abs(per_batch - expected) > 0.5
    np.testing.assert_allclose(out["mae"], np.abs(pred_all - target_all).mean(), rtol=1e-12)
    np.testing.assert_allclose(
        out["rmse"], np.sqrt(((pred_all - target_all) ** 2).mean()), rtol=1e-12
    )


def test_psnr_identical_images_is_infinite():
    x = torch.rand(1, 2, 12, 12)
    assert psnr(x, x) == math.inf
    metric = ImageQualityMetrics()
    metric.update(x, x)
    assert metric.compute()["psnr"] == math.inf


# ------------------------------------------------------------------------------------------- SSIM


def test_ssim_crop_matches_skimage_exactly():
    batches = _image_batches(seed=1)
    metric = ImageQualityMetrics()  # Gaussian 11 / sigma 1.5, data_range 1, border crop
    expected = []
    for pred, target in batches:
        metric.update(pred, target)
        for p, t in zip(pred.numpy(), target.numpy()):
            expected.append(structural_similarity(t, p, **SKIMAGE_SSIM))
    assert metric.compute()["ssim"] == pytest.approx(np.mean(expected), abs=1e-10)
    p, t = batches[0][0][:1], batches[0][1][:1]
    assert ssim(p, t) == pytest.approx(
        structural_similarity(t[0].numpy(), p[0].numpy(), **SKIMAGE_SSIM)
    )


def test_ssim_reflect_matches_torchmetrics():
    batches = _image_batches(seed=2)
    metric = ImageQualityMetrics(ssim_border="reflect")
    for pred, target in batches:
        metric.update(pred, target)
    pred_all = torch.cat([p for p, _ in batches])
    target_all = torch.cat([t for _, t in batches])
    expected = structural_similarity_index_measure(
        pred_all, target_all, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0
    )
    assert metric.compute()["ssim"] == pytest.approx(float(expected), abs=1e-10)


def test_ssim_uniform_window_matches_skimage_default_window():
    pred, target = _image_batches(seed=3, n_batches=1, b=1)[0]
    value = ssim(pred, target, kernel_size=7, window="uniform")
    expected = structural_similarity(
        target[0].numpy(),
        pred[0].numpy(),
        win_size=7,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=0,
    )
    assert value == pytest.approx(expected, abs=1e-10)


def test_ssim_float32_close_to_float64():
    pred, target = _image_batches(seed=4, n_batches=1)[0]
    assert ssim(pred.float(), target.float()) == pytest.approx(ssim(pred, target), abs=1e-5)


def test_ssim_rejects_small_images_and_bad_window():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="smaller than the 11-pixel window"):
        ssim(x, x)
    with pytest.raises(ValueError, match="odd"):
        ImageQualityMetrics(ssim_kernel=8)


# -------------------------------------------------------------------------------------------- SAM


def test_sam_hand_computed_orthogonal_and_parallel():
    f64 = torch.float64  # exact inputs, so that the tight bounds below hold on any CPU
    p = torch.tensor([[1.0, 0.0], [2.0, 2.0]], dtype=f64).T.reshape(1, 2, 1, 2)  # (1,0), (2,2)
    t = torch.tensor([[0.0, 5.0], [1.0, 1.0]], dtype=f64).T.reshape(1, 2, 1, 2)  # (0,5), (1,1)
    # angles: 90 deg and 0 deg -> mean 45 deg
    assert sam(p, t) == pytest.approx(45.0, abs=1e-5)
    assert sam(p, t, degrees=False) == pytest.approx(math.pi / 4, abs=1e-7)
    assert sam(p[..., :1], t[..., :1]) == pytest.approx(90.0, abs=1e-5)
    metric = ImageQualityMetrics(ssim_kernel=1)
    metric.update(p, t)
    out = metric.compute()
    assert out["sam_deg"] == pytest.approx(45.0, abs=1e-5)
    assert out["sam_rad"] == pytest.approx(math.pi / 4, abs=1e-7)


def test_sam_streaming_matches_torchmetrics_radians():
    batches = [(p + 0.01, t + 0.01) for p, t in _image_batches(seed=5)]  # no zero vectors
    metric = ImageQualityMetrics()
    for pred, target in batches:
        metric.update(pred, target)
    pred_all = torch.cat([p for p, _ in batches])
    target_all = torch.cat([t for _, t in batches])
    expected = float(spectral_angle_mapper(pred_all, target_all))  # radians
    out = metric.compute()
    assert out["sam_rad"] == pytest.approx(expected, abs=1e-9)
    assert out["sam_deg"] == pytest.approx(math.degrees(expected), abs=1e-7)


def test_sam_skips_zero_vectors():
    p = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)  # pixel 0 is a zero vector
    t = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).reshape(1, 2, 1, 2)
    assert sam(p, t) == pytest.approx(45.0, abs=1e-5)


# ------------------------------------------------------------------------------------------- masks


def test_masked_metrics_match_selected_pixels():
    batches = [(p + 0.01, t + 0.01) for p, t in _image_batches(seed=6)]
    g = torch.Generator().manual_seed(0)
    masks = [torch.rand(p.shape[0], 1, *p.shape[2:], generator=g) < 0.4 for p, _ in batches]
    cloudy, clear, everything = ImageQualityMetrics(), ImageQualityMetrics(), ImageQualityMetrics()
    sel_p, sel_t, ssim_values = [], [], []
    pad = 5
    for (pred, target), m in zip(batches, masks):
        cloudy.update(pred, target, mask=m)
        clear.update(pred, target, mask=~m)
        everything.update(pred, target, mask=torch.ones_like(m))
        mm = m[:, 0]
        sel_p.append(pred.permute(0, 2, 3, 1)[mm].numpy())
        sel_t.append(target.permute(0, 2, 3, 1)[mm].numpy())
        for i in range(pred.shape[0]):
            _, smap = structural_similarity(
                target[i].numpy(), pred[i].numpy(), full=True, **SKIMAGE_SSIM
            )  # (C, H, W) map; interior pixels are window-complete
            inner = mm[i, pad:-pad, pad:-pad].numpy()
            ssim_values.append(smap[:, pad:-pad, pad:-pad][:, inner].reshape(-1))
    p_sel, t_sel = np.concatenate(sel_p), np.concatenate(sel_t)  # (N, C)
    out = cloudy.compute()
    mse = ((p_sel - t_sel) ** 2).mean()
    assert out["psnr"] == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-9)
    assert out["mae"] == pytest.approx(np.abs(p_sel - t_sel).mean(), rel=1e-12)
    assert out["rmse"] == pytest.approx(np.sqrt(mse), rel=1e-12)
    cos = (p_sel * t_sel).sum(1) / np.linalg.norm(p_sel, axis=1) / np.linalg.norm(t_sel, axis=1)
    assert out["sam_rad"] == pytest.approx(np.arccos(np.clip(cos, -1, 1)).mean(), abs=1e-7)
    assert out["ssim"] == pytest.approx(np.concatenate(ssim_values).mean(), abs=1e-10)
    # cloudy + clear partitions the split: counts add up, and an all-True mask equals no mask
    unmasked = ImageQualityMetrics()
    for pred, target in batches:
        unmasked.update(pred, target)
    total = float(cloudy.value_count + clear.value_count)
    assert total == float(unmasked.value_count)
    mae_combined = (float(cloudy.abs_err_sum) + float(clear.abs_err_sum)) / total
    assert mae_combined == pytest.approx(unmasked.compute()["mae"], rel=1e-12)
    for key, value in unmasked.compute().items():
        assert everything.compute()[key] == pytest.approx(value, rel=1e-12), key


# ---------------------------------------------------------------------------- non-finite values
def _tm_reference(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """torchmetrics' values for the same input (the reference of the non-finite rule)."""
    from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    return {
        "psnr": float(PeakSignalNoiseRatio(data_range=1.0)(pred, target)),
        "mae": float(mean_absolute_error(pred, target)),
        "rmse": math.sqrt(float(mean_squared_error(pred, target))),
        "ssim": float(StructuralSimilarityIndexMeasure(data_range=1.0)(pred, target)),
        "sam_rad": float(spectral_angle_mapper(pred, target)),
    }


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_propagate_as_in_torchmetrics(bad):
    """Issue 12: sam() skipped a NaN pixel while ImageQualityMetrics returned NaN. One rule now: a
    non-finite value at a pixel that takes part gives torchmetrics' result, in both."""
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 24, 24, generator=g, dtype=torch.float64) + 0.05
    pred = (target + 0.05 * torch.randn(2, 3, 24, 24, generator=g, dtype=torch.float64)).clamp(0, 1)
    pred[1, 2, 7, 9] = bad
    reference = _tm_reference(pred, target)
    metric = ImageQualityMetrics()
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    out = metric.compute()
    for key, value in reference.items():
        assert _same(out[key], value), (key, out[key], value)
    assert _same(sam(pred, target, degrees=False), reference["sam_rad"])
    assert _same(psnr(pred, target), reference["psnr"])
    assert math.isnan(ssim(pred, target)) and math.isnan(sam(pred, target))
    assert math.isnan(reference["sam_rad"]) and math.isnan(reference["ssim"])
    if math.isnan(bad):
        assert all(math.isnan(v) for v in out.values())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_outside_the_mask_never_count(bad):
    """A masked-out NaN/inf affects no metric; SSIM leaves out the windows that reach it."""
    g = torch.Generator().manual_seed(4)
    target = torch.rand(1, 3, 24, 24, generator=g, dtype=torch.float64) + 0.05
    pred = (target + 0.05 * torch.randn(1, 3, 24, 24, generator=g, dtype=torch.float64)).clamp(0, 1)
    i0, j0 = 12, 13
    pred[0, 1, i0, j0] = bad
    mask = torch.ones(1, 1, 24, 24, dtype=torch.bool)
    mask[0, 0, i0, j0] = False
    metric = ImageQualityMetrics()
    metric.update(pred, target, mask=mask)
    out = metric.compute()
    keep = mask[0, 0].numpy()
    p_sel = pred[0].permute(1, 2, 0).numpy()[keep]  # (N, C), the valid pixels
    t_sel = target[0].permute(1, 2, 0).numpy()[keep]
    assert out["mae"] == pytest.approx(mean_absolute_error(t_sel, p_sel), rel=1e-12)
    mse = mean_squared_error(t_sel, p_sel)
    assert out["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-12)
    as_pixels = (torch.from_numpy(p_sel)[..., None, None], torch.from_numpy(t_sel)[..., None, None])
    tm_sam = float(spectral_angle_mapper(*as_pixels))  # (N, C, 1, 1): one pixel per image
    assert out["sam_rad"] == pytest.approx(tm_sam, rel=1e-9)
    assert sam(pred, target, degrees=False, mask=mask) == pytest.approx(tm_sam, rel=1e-9)
    # SSIM: scikit-image's map over the window-complete pixels whose window misses (i0, j0)
    filled = pred.clone()
    filled[0, 1, i0, j0] = 0.0
    _, smap = structural_similarity(target[0].numpy(), filled[0].numpy(), full=True, **SKIMAGE_SSIM)
    ii, jj = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    clear = (np.abs(ii - i0) > 5) | (np.abs(jj - j0) > 5)
    inner = np.zeros((24, 24), bool)
    inner[5:-5, 5:-5] = True
    picked = [
        smap[b, inner & (clear if b == 1 else True) & keep] for b in range(3)
    ]  # band 1 has it
    assert out["ssim"] == pytest.approx(np.concatenate(picked).mean(), rel=1e-10)
    # a non-finite value the mask includes still propagates
    included = ImageQualityMetrics()
    included.update(pred, target, mask=torch.ones_like(mask))
    assert math.isnan(included.compute()["ssim"]) and math.isnan(included.compute()["sam_rad"])


def test_mask_shape_is_checked():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"mask must be shaped \(B, 1, H, W\)"):
        ImageQualityMetrics().update(x, x, mask=torch.ones(2, 3, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="same shape"):
        ImageQualityMetrics().update(x, x[:, :2])


def test_merge_state_equals_single_process():
    """What DDP does (sum of states) gives the one-process result."""
    batches = _image_batches(seed=7, n_batches=4)
    a, b, single = ImageQualityMetrics(), ImageQualityMetrics(), ImageQualityMetrics()
    for i, (pred, target) in enumerate(batches):
        (a if i % 2 else b).update(pred, target)
        single.update(pred, target)
    a.merge_state(b)
    for key, value in single.compute().items():
        assert a.compute()[key] == pytest.approx(value, rel=1e-12), key


# ------------------------------------------------------------------------------------ segmentation


def _label_batches(seed=0, k=4, n_batches=3, shape=(2, 16, 16), ignore=255):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        target = rng.choice(k, size=shape, p=[0.6, 0.25, 0.1, 0.05][:k] if k == 4 else None)
        pred = np.where(rng.random(shape) < 0.7, target, rng.integers(0, k, size=shape))
        target = np.where(rng.random(shape) < 0.1, ignore, target)
        out.append((torch.from_numpy(pred), torch.from_numpy(target.astype(np.uint8))))
    return out


def test_segmentation_metrics_match_sklearn_on_concatenated_valid_pixels():
    k = 4
    batches = _label_batches(k=k)
    names = ["background", "glacier", "debris", "lake"]
    metric = SegmentationMetrics(num_classes=k, ignore_index=255, class_names=names)
    for pred, target in batches:
        metric.update(pred, target)
    out = metric.compute()
    y_pred = torch.cat([p.reshape(-1) for p, _ in batches]).numpy()
    y_true = torch.cat([t.reshape(-1) for _, t in batches]).numpy().astype(np.int64)
    keep = y_true != 255
    y_pred, y_true = y_pred[keep], y_true[keep]
    labels = list(range(k))
    assert out["mcc"] == pytest.approx(matthews_corrcoef(y_true, y_pred), abs=1e-12)
    assert out["kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred), abs=1e-12)
    assert out["kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(y_true, y_pred, weights="quadratic"), abs=1e-12
    )
    assert out["accuracy"] == pytest.approx((y_true == y_pred).mean(), abs=1e-12)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    np.testing.assert_array_equal(metric.confusion_matrix, cm)
    assert out["confusion_matrix"] == cm.tolist()
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    iou = jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    for c, name in enumerate(names):
        row = out["per_class"][name]
        assert row["precision"] == pytest.approx(prec[c], abs=1e-12)
        assert row["recall"] == pytest.approx(rec[c], abs=1e-12)
        assert row["f1"] == pytest.approx(f1[c], abs=1e-12)
        assert row["iou"] == pytest.approx(iou[c], abs=1e-12)
        assert row["support"] == support[c]
    assert out["miou"] == pytest.approx(iou.mean(), abs=1e-12)


def test_segmentation_logits_equal_labels_and_ignore_is_excluded():
    k = 3
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, k, 8, 8, generator=g)
    target = torch.randint(0, k, (2, 8, 8), generator=g)
    target[:, :2] = 255
    from_logits, from_labels = SegmentationMetrics(k), SegmentationMetrics(k)
    from_logits.update(logits, target)
    from_labels.update(logits.argmax(1), target)
    np.testing.assert_array_equal(from_logits.confusion_matrix, from_labels.confusion_matrix)
    assert from_logits.confusion_matrix.sum() == (target != 255).sum()
    # changing the prediction on ignored pixels changes nothing
    changed = logits.argmax(1).clone()
    changed[:, :2] = (changed[:, :2] + 1) % k
    again = SegmentationMetrics(k)
    again.update(changed, target)
    np.testing.assert_array_equal(again.confusion_matrix, from_labels.confusion_matrix)


def test_segmentation_input_errors():
    metric = SegmentationMetrics(3, ignore_index=255)
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="channels"):
        metric.update(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer labels"):
        metric.update(torch.tensor([0.5, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics(3, class_names=["a", "b"])


def test_confusion_helpers_edge_cases_match_sklearn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = [0, 0, 0]
        assert mcc_from_confusion([[3, 0], [0, 0]]) == matthews_corrcoef(y, y) == 0.0
        assert math.isnan(kappa_from_confusion([[3, 0], [0, 0]]))
        assert math.isnan(cohen_kappa_score(y, y, labels=[0, 1]))
    assert mcc_from_confusion(np.diag([5, 3, 2])) == pytest.approx(1.0)
    assert kappa_from_confusion(np.diag([5, 3, 2]), "quadratic") == pytest.approx(1.0)
    y_true, y_pred = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 1, 1, 0, 0]
    cm = confusion_matrix(y_true, y_pred)
    assert kappa_from_confusion(cm, "linear") == pytest.approx(
        cohen_kappa_score(y_true, y_pred, weights="linear")
    )
    with pytest.raises(ValueError, match="square"):
        mcc_from_confusion([[1, 2, 3]])


def test_glacier_facts_mcc_on_raw_label_values():
    """DOMAIN_FACTS: MCC of swapped glacier/debris is far below 1, of a perfect prediction 1."""
    rng = np.random.default_rng(0)
    y = rng.choice(4, size=4000, p=[0.70, 0.25, 0.0495, 0.0005])
    swapped = np.select([y == 1, y == 2], [2, 1], y)
    for pred in (y, swapped):
        metric = SegmentationMetrics(4)
        metric.update(torch.from_numpy(pred), torch.from_numpy(y))
        assert metric.compute()["mcc"] == pytest.approx(matthews_corrcoef(y, pred), abs=1e-12)


# ---------------------------------------------------------------------------------------- Spearman


def test_spearman_integer_levels_with_ties_streaming_equals_scipy():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, size=(5, 64, 64))  # risk ranks 0..2: many ties
    pred = np.clip(target + rng.integers(-1, 2, size=target.shape), 0, 2)
    target[0, :5] = 255
    rho = SpearmanRho(ignore_index=255)
    for p, t in zip(pred, target):
        rho.update(torch.from_numpy(p), torch.from_numpy(t))
    assert rho.pred_values == []  # everything went into the joint histogram
    keep = target != 255
    expected = spearmanr(pred[keep], target[keep]).statistic
    assert rho.compute() == pytest.approx(expected, abs=1e-12)


def test_spearman_float_and_mixed_batches_equal_scipy():
    rng = np.random.default_rng(1)
    target = np.round(rng.normal(size=3000), 1)  # ties among floats
    pred = np.round(target + rng.normal(scale=0.7, size=3000), 1)
    rho = SpearmanRho()
    for chunk in np.array_split(np.arange(3000), 4):
        rho.update(torch.from_numpy(pred[chunk]), torch.from_numpy(target[chunk]))
    assert rho.compute() == pytest.approx(spearmanr(pred, target).statistic, abs=1e-12)

    ints_t = rng.integers(0, 5, size=2000)
    ints_p = rng.integers(0, 5, size=2000)
    floats_p, floats_t = ints_p[:500] + 0.5, ints_t[:500].astype(float)  # goes to the value store
    mixed = SpearmanRho(levels=8)
    mixed.update(torch.from_numpy(ints_p[500:]), torch.from_numpy(ints_t[500:]))
    mixed.update(torch.from_numpy(floats_p), torch.from_numpy(floats_t))
    all_p = np.concatenate([ints_p[500:], floats_p])
    all_t = np.concatenate([ints_t[500:], floats_t])
    assert mixed.compute() == pytest.approx(spearmanr(all_p, all_t).statistic, abs=1e-12)


def test_spearman_drops_non_finite_and_handles_degenerate_input():
    p = torch.tensor([1.0, 2.0, float("nan"), 4.0, 3.0])
    t = torch.tensor([2.0, 1.0, 3.0, 4.0, float("inf")])
    rho = SpearmanRho()
    rho.update(p, t)
    # only the pairs where both values are finite: (1, 2), (2, 1), (4, 4)
    assert rho.compute() == pytest.approx(spearmanr([1.0, 2.0, 4.0], [2.0, 1.0, 4.0]).statistic)
    constant = SpearmanRho()
    constant.update(torch.zeros(10), torch.arange(10))
    assert math.isnan(constant.compute())


def test_spearman_merge_state_with_histogram_and_values_equals_scipy():
    """What DDP does (sum the histograms, concatenate the values) keeps rho exact."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (300,), generator=g)
    xf, yf = torch.rand(80, generator=g), torch.rand(80, generator=g)
    a, b = SpearmanRho(levels=4), SpearmanRho(levels=4)
    a.update(x[:200], y[:200])
    b.update(xf, yf)
    b.update(x[200:], y[200:])
    a.merge_state(b)
    expected = spearmanr(torch.cat([x, xf]).numpy(), torch.cat([y, yf]).numpy()).statistic
    assert a.compute() == pytest.approx(expected, abs=1e-12)


def test_forward_returns_the_batch_value_and_keeps_accumulating():
    pred, target = _image_batches(seed=8, n_batches=1)[0]
    metric = ImageQualityMetrics()
    batch_value = metric(pred, target)  # torchmetrics forward: score of this batch only
    assert batch_value["psnr"] == pytest.approx(psnr(pred, target), abs=1e-9)
    metric(pred * 0.5, target)
    pooled = psnr(torch.cat([pred, pred * 0.5]), torch.cat([target, target]))
    assert metric.compute()["psnr"] == pytest.approx(pooled, abs=1e-9)
