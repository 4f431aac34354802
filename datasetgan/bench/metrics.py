"""Segmentation scores: IoU and Dice (per class and mean), pixel accuracy, boundary distances (HD95,
ASSD, Chamfer, BF score) and calibration (MMCL, ECE).

Conventions (stated in every report):

* IoU, Dice and pixel accuracy come from ONE confusion matrix summed over all images of a test set
  (rows = truth, columns = prediction). A class that appears neither in the truth nor in the
  prediction of any image has no IoU/Dice (NaN) and is left out of the means; a class present in
  the truth but never predicted scores 0.
* ``miou`` averages over all classes including background (as the seed paper's mIoU);
  ``miou_fg`` and ``mdice_fg`` leave class 0 (background) out.
* Boundary metrics are computed per image and foreground class, in pixels at the evaluation
  resolution, from the boundary pixels of the two masks (MONAI's edges and exact Euclidean distance
  transform): HD95 = the larger of the two directed 95th percentiles (MONAI's
  HausdorffDistanceMetric), ASSD = the mean of all distances of both directions (MONAI's
  SurfaceDistanceMetric, symmetric), Chamfer = the mean of the two directed mean distances (eq. 8
  of the gambling-nets paper), BF = F1 of boundary precision and recall, a boundary pixel counting
  when its distance to the other boundary is below tau (eq. 9-10); tau = 2 px at 256x256, scaled to
  the evaluation resolution (0.5 px at 64x64: only boundary pixels lying on the other boundary).
  Empty masks: a class absent from both prediction and truth is skipped (NaN); absent from exactly
  one of them, the distances are the image diagonal (the largest possible) and BF is 0, so missed
  or hallucinated structures are penalised. Per-class values are means over images, the headline
  value the mean over foreground classes.
* MMCL (mean maximum class likelihood) is the mean over all pixels of the predicted class'
  probability; ECE (expected calibration error) uses 15 equal-width confidence bins over all pixels.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

BOUNDARY_KEYS = ("hd95", "assd", "chamfer", "bf")
BF_TAU_PX, BF_REFERENCE_RESOLUTION = 2.0, 256
ECE_BINS = 15


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K, K] counts, rows = true class, columns = predicted class."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    truth = np.asarray(truth).astype(np.int64).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in size: {pred.shape} vs {truth.shape}")
    if pred.size and (max(pred.max(), truth.max()) >= num_classes or min(pred.min(), truth.min()) < 0):
        raise ValueError(f"class ids must be in 0..{num_classes - 1}")
    return np.bincount(truth * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores_from_confusion(cm: np.ndarray) -> dict:
    """IoU and Dice per class (NaN for classes absent from truth and prediction), their means, accuracy."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    total = cm.sum()
    return {
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "miou": _nanmean(iou),
        "miou_fg": _nanmean(iou[1:]),
        "mdice_fg": _nanmean(dice[1:]),
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
    }


def per_image_iou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """float [N, K]: IoU of each class in each image; NaN where the class is in neither mask."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    out = np.full((len(pred), num_classes), np.nan)
    for i in range(len(pred)):
        out[i] = scores_from_confusion(confusion_matrix(pred[i], truth[i], num_classes))["iou"]
    return out


def boundary_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each boundary pixel of ``pred`` to the nearest boundary pixel of ``truth`` and
    back (two non-empty binary masks; MONAI's edges and Euclidean distance transform)."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI passes its own deprecated argument
        _, (d_pt, d_tp), _ = get_edge_surface_distance(
            torch.as_tensor(pred), torch.as_tensor(truth), symmetric=True, warn_empty=False
        )
    return d_pt.double().numpy(), d_tp.double().numpy()


def bf_tau(resolution: int) -> float:
    """The BF score's tolerance in pixels: 2 px at 256x256, scaled to the evaluation resolution."""
    return BF_TAU_PX * resolution / BF_REFERENCE_RESOLUTION


def boundary_scores(pred: np.ndarray, truth: np.ndarray, num_classes: int, tau: float | None = None) -> dict:
    """Per image and foreground class, float [N, K-1] each: ``hd95``, ``assd`` (MONAI's definitions),
    ``chamfer`` (eq. 8: the mean of the two directed mean distances) and ``bf`` (eq. 9-10, tolerance
    ``tau`` pixels, default :func:`bf_tau`), with the empty-mask convention of the module doc."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    n, size = len(truth), truth.shape[1:3]
    tau = bf_tau(size[0]) if tau is None else tau
    out = {k: np.full((n, max(num_classes - 1, 0)), np.nan) for k in BOUNDARY_KEYS}
    diag = math.hypot(*size)
    for i in range(n):
        for c in range(1, num_classes):
            p, t = pred[i] == c, truth[i] == c
            has_p, has_t = bool(p.any()), bool(t.any())
            if has_p and has_t:
                d_pt, d_tp = boundary_distances(p, t)
                out["hd95"][i, c - 1] = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
                out["assd"][i, c - 1] = (d_pt.sum() + d_tp.sum()) / (len(d_pt) + len(d_tp))
                out["chamfer"][i, c - 1] = (d_pt.mean() + d_tp.mean()) / 2
                precision, recall = (d_pt < tau).mean(), (d_tp < tau).mean()
                out["bf"][i, c - 1] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            elif has_p != has_t:
                for k in ("hd95", "assd", "chamfer"):
                    out[k][i, c - 1] = diag
                out["bf"][i, c - 1] = 0.0
    return out


def hd95(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """float [N, K-1]: HD95 per image and foreground class, with the conventions in the module doc."""
    return boundary_scores(pred, truth, num_classes)["hd95"]


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> tuple[float, float]:
    """(MMCL, ECE) over all pixels: MMCL is the mean of the most likely class' probability; ECE sums,
    over ``bins`` equal-width confidence bins (lo, hi], the share of pixels in the bin times the gap
    between their accuracy and their mean confidence."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    if not conf.size:
        return math.nan, math.nan
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.abs(np.bincount(idx, ok, bins) - np.bincount(idx, conf, bins))  # |sum acc - sum conf| per bin
    return float(conf.mean()), float(gap.sum() / conf.size)


def evaluate(
    pred: np.ndarray, truth: np.ndarray, num_classes: int, confidence: np.ndarray | None = None, boundaries: bool = True
) -> dict:
    """All scores of a test set, JSON-ready (NaN becomes None). ``confidence``: the probability of the
    predicted class per pixel (float [N, H, W]), for MMCL and ECE."""
    res = scores_from_confusion(confusion_matrix(pred, truth, num_classes))
    res["n_images"] = int(len(truth))
    if boundaries:
        per_image = boundary_scores(pred, truth, num_classes)
        for k, d in per_image.items():
            per_class = [_nanmean(d[:, c]) for c in range(d.shape[1])]
            res[f"{k}_per_class"] = [math.nan] + per_class  # index = class id; background has none
            res[k] = _nanmean(np.asarray(per_class))
        res["bf_tau_px"] = bf_tau(np.asarray(truth).shape[1])
    if confidence is not None:
        res["mmcl"], res["ece"] = calibration(confidence, np.asarray(pred) == np.asarray(truth))
    return to_json(res)


def _nanmean(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan


def to_json(x):
    """Replace NaN and infinities by None so the result is strict JSON."""
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and (population, ddof=0) standard deviation over folds, skipping missing values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return None, None
    return float(v.mean()), float(v.std())
