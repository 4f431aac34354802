"""A procedural phantom of short-axis cardiac MRI slices with masks, for the built-in demo.

Each slice is drawn from its own ``numpy`` Generator seeded with ``(seed, index)``, so a slice
depends only on the seed and its index (not on how many slices are made) and the same seed gives
the same bytes. The anatomy is a simplified short-axis view:

* the body: an irregular ellipse of textured soft tissue with a bright subcutaneous fat rim, on a
  dark, slightly noisy background (air);
* dark lungs either side of the heart, a mid-grey liver below-left, the descending aorta (bright
  disc) and the spine behind the heart;
* the heart, with the same three labelled structures as ACDC: 3 the left-ventricle cavity (a bright
  disc, sometimes with dark papillary muscles that stay labelled as cavity, as in ACDC),
  2 the myocardium (a dark ring around it) and 1 the right-ventricle cavity (a bright crescent
  hugging the septum on the image's left, behind a thin dark free wall).

Heart size, position, rotation and wall thickness vary per slice; a smooth multiplicative bias field
(coil sensitivity), a small blur and Rician noise make the intensities look acquired. Images are
rendered on a supersampled grid and box-averaged (anti-aliasing); masks evaluate the same geometry
at the output pixel centres, so they line up with the images exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from .atomic import atomic_write_bytes, atomic_write_text
from .data import ClassInfo, labels_to_json
from .png import png_bytes

# Same ids, names and colours as ACDC's labels.json, so the demo looks like the real use case.
CLASSES = [
    ClassInfo(0, "background", "#000000"),
    ClassInfo(1, "right_ventricle", "#e6194b"),
    ClassInfo(2, "myocardium", "#3cb44b"),
    ClassInfo(3, "left_ventricle", "#4363d8"),
]
RV, MYO, LV = 1, 2, 3


@dataclass(frozen=True)
class PhantomOptions:
    resolution: int = 64
    supersample: int = 3  # image rendered at resolution*supersample, then box-averaged
    rv_probability: float = 0.92  # apical slices may show no right ventricle


# ---------------------------------------------------------------------------------------------
# Geometry: every shape is a function of coordinates, evaluated on the fine (image) grid and on
# the output pixel centres (mask).


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], x to the right and y downwards."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    return np.meshgrid(c, c)


def _ellipse(x, y, cx, cy, a, b, angle, harmonics=()):
    """Normalised radius (<1 inside) of a rotated ellipse, optionally with a wobbly outline."""
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    u = (dx * ca + dy * sa) / a
    v = (-dx * sa + dy * ca) / b
    r = np.sqrt(u * u + v * v)
    if harmonics:
        t = np.arctan2(v, u)
        r = r / (1 + sum(amp * np.cos(k * t + ph) for k, amp, ph in harmonics))
    return r


def _draw_params(rng: np.random.Generator, opts: PhantomOptions) -> dict:
    """All random choices of one slice (drawn in a fixed order so the stream is reproducible)."""
    u = rng.uniform
    p = {}
    p["rot"] = u(-0.45, 0.45)  # whole-anatomy rotation
    p["body"] = dict(
        cx=u(-0.08, 0.08),
        cy=u(-0.02, 0.12),
        a=u(0.88, 1.2),
        b=u(0.68, 0.95),
        harm=[(k, u(0.0, 0.045), u(0, 2 * np.pi)) for k in (2, 3, 4, 5)],
    )
    p["fat"] = u(0.035, 0.075)  # subcutaneous fat rim thickness
    # heart centre in the body's frame (a little left of centre and up, like ACDC crops)
    p["heart"] = dict(cx=u(-0.22, 0.22), cy=u(-0.22, 0.12))
    r_lv = u(0.09, 0.23)
    p["lv"] = dict(
        r=r_lv, ecc=u(0.82, 1.18), angle=u(0, np.pi), harm=[(k, u(0.0, 0.04), u(0, 2 * np.pi)) for k in (2, 3)]
    )
    # wall at least 1.5 output pixels thick, so the ring stays closed in the mask at any resolution
    p["myo_t"] = max(0.05, 3.0 / opts.resolution, r_lv * u(0.35, 0.75))
    p["rv"] = dict(
        present=bool(u() < opts.rv_probability),
        theta=np.pi + u(-0.15, 0.65),
        d=u(0.45, 0.85),
        a=u(0.7, 1.1),
        b=u(1.1, 1.55),
        wall=u(0.02, 0.035),
    )
    p["papillary"] = [dict(t=u(0, 2 * np.pi), r=u(0.08, 0.16)) for _ in range(int(rng.integers(0, 3)))]
    # epicardial fat: a bright band around part of the heart
    p["epi"] = dict(w=u(0.02, 0.05), t0=u(0, 2 * np.pi), span=u(1.0, 4.5))
    # clutter: bowel, vessels and muscle bundles, as small ellipses of random brightness
    p["clutter"] = [
        dict(x=u(-1, 1), y=u(-1, 1), a=u(0.03, 0.14), b=u(0.03, 0.1), ang=u(0, np.pi), i=u(0.1, 0.8))
        for _ in range(int(rng.integers(6, 16)))
    ]
    p["lungs"] = [
        dict(dx=u(0.28, 0.42), dy=u(-0.25, 0.05), a=u(0.18, 0.3), b=u(0.3, 0.45), ang=u(-0.5, 0.5)),
        dict(dx=-u(0.35, 0.5), dy=u(-0.3, -0.05), a=u(0.16, 0.26), b=u(0.25, 0.4), ang=u(-0.5, 0.5)),
    ]
    p["liver"] = dict(dx=u(-0.55, -0.25), dy=u(0.35, 0.55), a=u(0.35, 0.55), b=u(0.2, 0.32), ang=u(-0.6, 0.2))
    p["aorta"] = dict(dx=u(0.15, 0.35), dy=u(0.3, 0.45), r=u(0.045, 0.07))
    p["spine"] = dict(dx=u(-0.05, 0.1), dy=u(0.5, 0.62), r=u(0.08, 0.11))
    # intensities (relative; the image is rescaled per slice afterwards, like ACDC's per-volume scaling)
    p["I"] = dict(
        air=u(0.0, 0.03),
        tissue=u(0.22, 0.36),
        fat=u(0.65, 0.95),
        lung=u(0.04, 0.12),
        liver=u(0.3, 0.45),
        blood=u(0.7, 0.95),
        rv_blood=u(0.62, 0.9),
        myo=u(0.14, 0.26),
        aorta=u(0.6, 0.9),
        spine=u(0.35, 0.5),
        papillary=u(0.2, 0.35),
    )
    p["bias"] = u(0.1, 0.3)  # amplitude of the coil-sensitivity bias field
    p["texture"] = u(0.05, 0.12)  # amplitude of the soft-tissue texture
    p["noise"] = u(0.015, 0.045)  # Rician noise sigma
    p["blur"] = u(0.3, 0.7)  # point-spread sigma in output pixels
    p["top"] = u(0.85, 1.0)  # brightest blood maps to this fraction of 255
    return p


def _regions(p: dict, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean maps of every structure at coordinates (x, y)."""
    rot = p["rot"]
    cr, sr = np.cos(rot), np.sin(rot)
    b = p["body"]

    def place(dx, dy, origin=(b["cx"], b["cy"])):
        """A point given in the body's (rotated) frame, in image coordinates."""
        return origin[0] + dx * cr - dy * sr, origin[1] + dx * sr + dy * cr

    body_r = _ellipse(x, y, b["cx"], b["cy"], b["a"], b["b"], rot, b["harm"])
    reg = {"body": body_r < 1, "inner": body_r < 1 - p["fat"] / min(b["a"], b["b"])}

    hx, hy = place(p["heart"]["cx"], p["heart"]["cy"])
    lv = p["lv"]
    a_lv, b_lv = lv["r"] * lv["ecc"], lv["r"] / lv["ecc"]
    t = p["myo_t"]
    lv_r = _ellipse(x, y, hx, hy, a_lv, b_lv, lv["angle"] + rot, lv["harm"])
    myo_r = _ellipse(x, y, hx, hy, a_lv + t, b_lv + t, lv["angle"] + rot, lv["harm"])
    reg["lv"] = lv_r < 1
    reg["myo_outer"] = myo_r < 1
    r_out = lv["r"] + t

    rv = p["rv"]
    if rv["present"]:
        th = rv["theta"] + rot
        cx, cy = hx + rv["d"] * r_out * np.cos(th), hy + rv["d"] * r_out * np.sin(th)
        rv_r = _ellipse(x, y, cx, cy, rv["a"] * r_out, rv["b"] * r_out, th)
        wall = 1 + rv["wall"] / (rv["a"] * r_out)
        reg["rv"] = (rv_r < 1) & ~reg["myo_outer"]
        reg["rv_wall"] = (rv_r < wall) & ~reg["myo_outer"] & ~reg["rv"]
    else:
        reg["rv"] = np.zeros_like(reg["lv"])
        reg["rv_wall"] = np.zeros_like(reg["lv"])

    e = p["epi"]
    epi_r = _ellipse(x, y, hx, hy, a_lv + t + e["w"], b_lv + t + e["w"], lv["angle"] + rot, lv["harm"])
    ang = np.mod(np.arctan2(y - hy, x - hx) - e["t0"], 2 * np.pi)
    reg["epi"] = (epi_r < 1) & ~reg["myo_outer"] & (ang < e["span"])

    reg["papillary"] = np.zeros_like(reg["lv"])
    for pm in p["papillary"]:
        d = 0.72 * lv["r"]
        px, py = hx + d * np.cos(pm["t"]), hy + d * np.sin(pm["t"])
        reg["papillary"] |= (_ellipse(x, y, px, py, pm["r"] * lv["r"], pm["r"] * lv["r"], 0) < 1) & reg["lv"]

    clutter = []
    for c in p["clutter"]:
        inside = (_ellipse(x, y, c["x"], c["y"], c["a"], c["b"], c["ang"]) < 1) & reg["inner"]
        clutter.append((inside, c["i"]))
    reg["clutter"] = clutter

    lungs = np.zeros_like(reg["lv"])
    for lg in p["lungs"]:
        cx, cy = place(lg["dx"], lg["dy"], (hx, hy))
        lungs |= _ellipse(x, y, cx, cy, lg["a"], lg["b"], lg["ang"] + rot) < 1
    reg["lungs"] = lungs & reg["inner"]
    lv_ = p["liver"]
    cx, cy = place(lv_["dx"], lv_["dy"], (hx, hy))
    reg["liver"] = (_ellipse(x, y, cx, cy, lv_["a"], lv_["b"], lv_["ang"] + rot) < 1) & reg["inner"]
    for name in ("aorta", "spine"):
        s = p[name]
        cx, cy = place(s["dx"], s["dy"], (hx, hy))
        reg[name] = (_ellipse(x, y, cx, cy, s["r"], s["r"], 0) < 1) & reg["inner"]
    return reg


def _label_map(reg: dict) -> np.ndarray:
    m = np.zeros(reg["lv"].shape, dtype=np.uint8)
    m[reg["rv"]] = RV
    m[reg["myo_outer"]] = MYO
    m[reg["lv"]] = LV
    return m


# ---------------------------------------------------------------------------------------------
# Intensities


def _smooth_field(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` pixels."""
    f = gaussian_filter(rng.standard_normal((n, n)), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def render_slice(rng: np.random.Generator, opts: PhantomOptions = PhantomOptions()) -> tuple[np.ndarray, np.ndarray]:
    """One slice: (image uint8 [R, R], mask uint8 [R, R] with ids 0..3)."""
    res, ss = opts.resolution, opts.supersample
    p = _draw_params(rng, opts)
    n = res * ss
    fine = _regions(p, *_grid(n))
    I = p["I"]  # noqa: E741 (the intensity table, named as in the docstring)

    tex = _smooth_field(rng, n, 0.02 * n)  # fine soft-tissue texture
    tex2 = _smooth_field(rng, n, 0.006 * n + 0.5)  # grain inside organs
    img = np.full((n, n), I["air"]) + 0.01 * np.abs(tex2)
    tissue = I["tissue"] * (1 + p["texture"] * 2 * tex)
    img = np.where(fine["body"], I["fat"] * (1 + 0.08 * tex2), img)
    img = np.where(fine["inner"], tissue, img)
    for inside, level in fine["clutter"]:
        img = np.where(inside, level * (1 + 0.1 * tex2), img)
    img = np.where(fine["liver"], I["liver"] * (1 + 0.05 * tex2), img)
    img = np.where(fine["lungs"], I["lung"] * (1 + 0.8 * np.abs(tex2)) + 0.04 * np.maximum(tex2 - 1.5, 0), img)
    img = np.where(fine["spine"], I["spine"] * (1 + 0.1 * tex), img)
    img = np.where(fine["aorta"], I["aorta"], img)
    img = np.where(fine["epi"], I["fat"] * 0.9 * (1 + 0.05 * tex2), img)
    img = np.where(fine["rv_wall"], I["myo"] * 1.3, img)
    img = np.where(fine["rv"], I["rv_blood"] * (1 + 0.04 * tex), img)
    img = np.where(fine["myo_outer"], I["myo"] * (1 + 0.08 * tex2), img)
    img = np.where(fine["lv"], I["blood"] * (1 + 0.04 * tex), img)
    img = np.where(fine["papillary"], I["papillary"], img)

    img = img * (1 + p["bias"] * _smooth_field(rng, n, 0.35 * n))  # coil sensitivity
    img = gaussian_filter(img, p["blur"] * ss)
    img = img.reshape(res, ss, res, ss).mean(axis=(1, 3))  # box-average to output size
    sigma = p["noise"]
    img = np.hypot(img + sigma * rng.standard_normal(img.shape), sigma * rng.standard_normal(img.shape))
    # per-slice scaling, as ACDC's per-volume min-max: brightest blood near the top of the range
    hi = np.percentile(img, 99.7)
    img = np.clip(img / hi * p["top"] * 255, 0, 255)
    image = np.round(img).astype(np.uint8)

    mask = _label_map(_regions(p, *_grid(res)))
    return image, mask


def phantom_slice(seed: int, index: int, resolution: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``index`` of the phantom with ``seed``: independent of every other slice."""
    rng = np.random.default_rng([int(seed), int(index)])
    return render_slice(rng, PhantomOptions(resolution=resolution))


def slice_name(index: int) -> str:
    return f"phantom_{index:05d}"


def write_phantom_folder(out_dir, n: int, resolution: int = 64, seed: int = 0) -> Path:
    """Write ``n`` slices as a canonical data folder: images/, masks/, labels.json, phantom.json.

    Every file is written atomically; existing slices with the same names are overwritten.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if resolution < 16:
        raise ValueError(f"resolution must be at least 16, got {resolution}")
    out = Path(out_dir)
    for i in range(n):
        image, mask = phantom_slice(seed, i, resolution)
        atomic_write_bytes(out / "images" / f"{slice_name(i)}.png", png_bytes(image))
        atomic_write_bytes(out / "masks" / f"{slice_name(i)}.png", png_bytes(mask))
    atomic_write_text(out / "labels.json", labels_to_json(CLASSES))
    atomic_write_text(
        out / "phantom.json",
        json.dumps(
            {
                "generator": "datasetgan.phantom",
                "seed": seed,
                "n": n,
                "options": asdict(PhantomOptions(resolution=resolution)),
            },
            indent=1,
        ),
    )
    return out
