"""Segmentation scores: mIoU, per-class IoU and Dice, pixel accuracy, HD95.

Conventions (stated in every report):

* IoU, Dice and pixel accuracy come from ONE confusion matrix summed over all images of a test set
  (rows = truth, columns = prediction). A class that appears neither in the truth nor in the
  prediction of any image has no IoU/Dice (NaN) and is left out of the means; a class present in
  the truth but never predicted scores 0.
* ``miou`` averages over all classes including background (as the seed paper's mIoU);
  ``miou_fg`` and ``mdice_fg`` leave class 0 (background) out.
* HD95 (95th percentile symmetric Hausdorff distance between mask boundaries, in pixels at the
  evaluation resolution) is computed per image and foreground class with scipy's exact Euclidean
  distance transform, as MONAI's ``compute_hausdorff_distance(percentile=95)`` does (a test compares
  the two). If the class is absent from both prediction and
  truth the value is skipped (NaN); if it is absent from exactly one of them, the distance is set to
  the image diagonal (the largest possible), so missed or hallucinated structures are penalised.
  Per-class HD95 is the mean over images, ``hd95`` the mean over foreground classes.
"""
from __future__ import annotations

import math

import numpy as np


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K, K] counts, rows = true class, columns = predicted class."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    truth = np.asarray(truth).astype(np.int64).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in size: {pred.shape} vs {truth.shape}")
    if pred.size and (max(pred.max(), truth.max()) >= num_classes or min(pred.min(), truth.min()) < 0):
        raise ValueError(f"class ids must be in 0..{num_classes - 1}")
    return np.bincount(truth * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


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


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask: the mask minus its erosion (pixels outside count as empty)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def hd95_binary(pred: np.ndarray, truth: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the boundaries of two non-empty binary
    masks: the larger of the two directed 95th percentiles (the definition MONAI uses)."""
    from scipy.ndimage import distance_transform_edt

    ep, et = _edges(pred), _edges(truth)
    d_pt = distance_transform_edt(~et)[ep]   # each predicted boundary pixel to the nearest true one
    d_tp = distance_transform_edt(~ep)[et]
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def hd95(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """float [N, K-1]: HD95 per image and foreground class, with the conventions in the module doc."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    n = len(truth)
    out = np.full((n, max(num_classes - 1, 0)), np.nan)
    for i in range(n):
        diag = math.hypot(*truth.shape[1:3])
        for c in range(1, num_classes):
            p, t = pred[i] == c, truth[i] == c
            has_p, has_t = p.any(), t.any()
            if has_p and has_t:
                out[i, c - 1] = hd95_binary(p, t)
            elif has_p != has_t:
                out[i, c - 1] = diag
    return out


def evaluate(pred: np.ndarray, truth: np.ndarray, num_classes: int, with_hd95: bool = True) -> dict:
    """All scores of a test set, JSON-ready (NaN becomes None)."""
    res = scores_from_confusion(confusion_matrix(pred, truth, num_classes))
    res["n_images"] = int(len(truth))
    if with_hd95:
        d = hd95(pred, truth, num_classes)
        per_class = [_nanmean(d[:, c]) for c in range(d.shape[1])]
        res["hd95_per_class"] = [math.nan] + per_class  # index = class id; background has none
        res["hd95"] = _nanmean(np.asarray(per_class))
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
