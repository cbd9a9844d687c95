"""Synthetic bright-field TEM micrographs of the paper's 8 classes (the demo dataset).

Image formation: every object adds projected thickness (nm of carbon-equivalent) to a map T;
bright-field mass-thickness contrast gives I = I0 * illumination * exp(-T / mfp) (Beer-Lambert:
thicker is darker); then defocus blur, Poisson shot noise and quantisation to 8 or 16 bits.
The magnification (nm per pixel), orientation, image size and bit depth vary per image.
Everything is drawn from ``numpy.random.default_rng([seed, class, index])``: deterministic.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage

# The NIOSH Dataverse file-name prefix of each class; NC sub-classes come from labels.csv.
NIOSH_PREFIX = {"Cl": "CNT-Cluster", "Fi": "CNT-Fiber", "Ma": "CNT-Matrix", "MS": "CNT-MatrixSurface",
                "GS": "NonCNT", "SP": "NonCNT", "HDP": "NonCNT", "PR": "NonCNT"}
CLASSES = tuple(NIOSH_PREFIX)
MEAN_FREE_PATH_NM = 120.0


# ----------------------------------------------------------------------------- primitives
def _smooth_noise(rng, shape, sigma):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-9)


def _curve(rng, start, heading, length, wiggle=0.02, step=1.0):
    """A smoothly bending centre line: points (x, y) every `step` pixels."""
    n = max(int(length / step), 2)
    turn = np.cumsum(rng.normal(0.0, wiggle, n))
    angles = heading + np.cumsum(turn) * 0.05 + turn
    pts = np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1) * step, 0)
    return pts + np.asarray(start, float)


def _add_tube(T, pts, outer, inner):
    """Projected thickness of a hollow multi-wall tube along `pts`: paired dark walls."""
    h, w = T.shape
    pad = int(outer) + 2
    x0, y0 = np.floor(pts.min(0)).astype(int) - pad
    x1, y1 = np.ceil(pts.max(0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.ones((y1 - y0, x1 - x0), bool)
    ij = np.rint(pts[:, ::-1] - [y0, x0]).astype(int)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < mask.shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < mask.shape[1])
    if not ok.any():
        return
    mask[ij[ok, 0], ij[ok, 1]] = False
    d = ndimage.distance_transform_edt(mask)
    wall = 2 * np.sqrt(np.clip(outer**2 - d**2, 0, None)) - 2 * np.sqrt(np.clip(inner**2 - d**2, 0, None))
    T[y0:y1, x0:x1] += 2.5 * wall  # graphitic walls scatter more than amorphous carbon


def _add_sphere(T, cx, cy, radius, density=1.0):
    h, w = T.shape
    r = int(radius) + 1
    ys, xs = np.ogrid[max(int(cy) - r, 0):min(int(cy) + r + 1, h), max(int(cx) - r, 0):min(int(cx) + r + 1, w)]
    if ys.size == 0 or xs.size == 0:
        return
    d2 = (xs - cx) ** 2 + (ys - cy) ** 2
    T[ys, xs] += density * 2 * np.sqrt(np.clip(radius**2 - d2, 0, None))


def _polygon_mask(shape, vertices):
    im = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(im).polygon([tuple(v) for v in vertices], fill=1)
    return np.asarray(im, bool)


def _random_polygon(rng, center, radius, n_vertices, irregular=0.3):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radii = radius * rng.uniform(1 - irregular, 1 + irregular, n_vertices)
    return np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1)


def _blob(rng, shape, center, radius, roughness=0.35):
    """A rounded, irregular agglomerate mask with a smooth interior thickness profile."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    rr = np.hypot((xs - center[0]) / radius[0], (ys - center[1]) / radius[1])
    edge = 1 + roughness * _smooth_noise(rng, shape, max(min(radius) / 4, 2))
    profile = np.clip(1 - (rr / edge) ** 2, 0, None)
    return np.sqrt(profile)


def _tube_radii(rng, nm_per_px):
    outer = rng.uniform(7, 18) / nm_per_px
    return max(outer, 1.5), max(outer, 1.5) * rng.uniform(0.35, 0.6)


# ----------------------------------------------------------------------------- classes
def _fiber(rng, T, s, nmpp):
    for _ in range(rng.integers(1, 3)):
        outer, inner = _tube_radii(rng, nmpp)
        length = rng.uniform(0.45, 0.85) * s
        length = max(length, 4 * 2 * outer)  # aspect ratio > 3
        start = rng.uniform(0.2, 0.8, 2) * s
        heading = rng.uniform(0, 2 * np.pi)
        start = start - 0.5 * length * np.array([np.cos(heading), np.sin(heading)])
        _add_tube(T, _curve(rng, start, heading, length, wiggle=0.01), outer, inner)


def _cluster(rng, T, s, nmpp):
    center = rng.uniform(0.35, 0.65, 2) * s
    for _ in range(rng.integers(6, 14)):
        outer, inner = _tube_radii(rng, nmpp)
        length = rng.uniform(0.3, 0.7) * s
        start = center + rng.normal(0, 0.18 * s, 2)
        heading = rng.uniform(0, 2 * np.pi)
        start = start - 0.5 * length * np.array([np.cos(heading), np.sin(heading)])
        _add_tube(T, _curve(rng, start, heading, length, wiggle=0.03), outer, inner)


def _matrix(rng, T, s, nmpp):
    center = rng.uniform(0.4, 0.6, 2) * s
    radius = rng.uniform(0.2, 0.35, 2) * s
    T += rng.uniform(110, 200) * _blob(rng, T.shape, center, radius) * (1 + 0.2 * _smooth_noise(rng, T.shape, 4))
    for _ in range(rng.integers(5, 12)):
        outer, inner = _tube_radii(rng, nmpp)
        angle = rng.uniform(0, 2 * np.pi)
        start = center + 0.6 * radius * np.array([np.cos(angle), np.sin(angle)]) * rng.uniform(0.3, 1)
        _add_tube(T, _curve(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.35) * s, 0.04),
                  outer, inner)


def _matrix_surface(rng, T, s, nmpp):
    center = rng.uniform(0.3, 0.7, 2) * s
    radius = rng.uniform(0.3, 0.45, 2) * s
    T += rng.uniform(600, 1000) * _blob(rng, T.shape, center, radius, roughness=0.15)
    for _ in range(rng.integers(3, 9)):
        outer, inner = _tube_radii(rng, nmpp)
        angle = rng.uniform(0, 2 * np.pi)
        start = center + 0.9 * radius * np.array([np.cos(angle), np.sin(angle)])
        heading = angle + rng.normal(0, 0.4)  # protruding outward from the surface
        _add_tube(T, _curve(rng, start, heading, rng.uniform(0.15, 0.3) * s, 0.02), outer, inner)


def _graphene(rng, T, s, nmpp):
    for _ in range(rng.integers(2, 6)):
        vertices = _random_polygon(rng, rng.uniform(0.25, 0.75, 2) * s, rng.uniform(0.15, 0.4) * s,
                                   rng.integers(3, 7), irregular=0.25)
        sheet = _polygon_mask(T.shape, vertices).astype(float)
        edge = sheet - ndimage.binary_erosion(sheet, iterations=2)
        T += rng.uniform(4, 12) * sheet + rng.uniform(5, 15) * edge  # folded edges read darker


def _soot(rng, T, s, nmpp):
    for _ in range(rng.integers(1, 3)):
        radius_px = rng.uniform(10, 20) / nmpp  # spherules of 20-40 nm diameter
        centers = [rng.uniform(0.3, 0.7, 2) * s]
        for _ in range(rng.integers(60, 200)):
            parent = centers[rng.integers(len(centers))]
            angle = rng.uniform(0, 2 * np.pi)
            centers.append(parent + 1.7 * radius_px * np.array([np.cos(angle), np.sin(angle)]))
        for cx, cy in centers:
            _add_sphere(T, cx, cy, radius_px * rng.uniform(0.85, 1.15), density=1.3)


def _high_density(rng, T, s, nmpp):
    ys, xs = np.mgrid[0:T.shape[0], 0:T.shape[1]]
    for _ in range(rng.integers(2, 8)):
        mask = _polygon_mask(T.shape, _random_polygon(rng, rng.uniform(0.15, 0.85, 2) * s,
                                                       rng.uniform(15, 60) / nmpp, rng.integers(5, 8), 0.1))
        phase = rng.uniform(0, 2 * np.pi)
        period = rng.uniform(3, 6)
        fringes = 1 + 0.25 * np.sin(2 * np.pi * (xs * np.cos(phase) + ys * np.sin(phase)) / period)
        T += mask * rng.uniform(200, 350) * fringes  # dense mineral/metal: near black, lattice fringes


def _polymer(rng, T, s, nmpp):
    field = _smooth_noise(rng, T.shape, max(s / 60, 2))
    strands = np.abs(field) < rng.uniform(0.25, 0.45)  # lacy network of thin strands
    region = _blob(rng, T.shape, rng.uniform(0.4, 0.6, 2) * s, rng.uniform(0.3, 0.5, 2) * s, 0.3) > 0
    T += rng.uniform(20, 45) * ndimage.gaussian_filter((strands & region).astype(float), 1.0)


RENDERERS = {"Cl": _cluster, "Fi": _fiber, "Ma": _matrix, "MS": _matrix_surface,
             "GS": _graphene, "SP": _soot, "HDP": _high_density, "PR": _polymer}


def render(cls: str, seed: int, index: int, size_range=(256, 1024), bit_depths=(8, 16)) -> np.ndarray:
    """One synthetic micrograph of class `cls` as uint8 or uint16 (H, W)."""
    rng = np.random.default_rng([seed, CLASSES.index(cls), index])
    size = int(rng.integers(size_range[0], size_range[1] + 1))
    nm_per_px = rng.uniform(1.0, 3.0) * 512 / size  # random magnification
    T = np.abs(rng.uniform(2, 6) * _smooth_noise(rng, (size, size), size / 30))  # filter texture
    RENDERERS[cls](rng, T, size, nm_per_px)
    T = np.rot90(T, k=int(rng.integers(4)))  # random orientation
    ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
    illumination = 1 + rng.uniform(-0.15, 0.15) * xs + rng.uniform(-0.15, 0.15) * ys - rng.uniform(0, 0.3) * (xs**2 + ys**2)
    intensity = illumination * np.exp(-T / MEAN_FREE_PATH_NM)
    intensity = ndimage.gaussian_filter(intensity, rng.uniform(0.4, 1.4))  # defocus
    dose = rng.uniform(40, 200)  # electrons per pixel: shot noise
    intensity = rng.poisson(np.clip(intensity, 0, None) * dose) / dose
    depth = int(rng.choice(bit_depths))
    top = 255 if depth == 8 else rng.integers(4000, 65535)
    scaled = np.clip(intensity / max(np.percentile(intensity, 99.9), 1e-6), 0, 1) * top
    return np.rint(scaled).astype(np.uint8 if depth == 8 else np.uint16)


def generate_dataset(out_dir, counts: dict[str, int], labels_csv=None, seed: int = 0,
                     size_range=(256, 1024), bit_depths=(8, 16), progress: bool = False) -> Path:
    """Write a NIOSH-style flat folder of TIFFs plus ``labels.csv`` for the NC sub-classes.

    ``labels_csv`` defaults to ``labels.csv`` beside ``out_dir``; returns its path. The CSV names every NonCNT file with its sub-class, as the
    8-class labels file of the real dataset does.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = {prefix: 0 for prefix in NIOSH_PREFIX.values()}
    label_rows = []
    jobs = [(cls, i) for cls in CLASSES for i in range(counts.get(cls, 0))]
    for cls, i in tqdm(jobs, desc="synthetic TEM", unit="img", disable=not progress):
        prefix = NIOSH_PREFIX[cls]
        numbers[prefix] += 1
        name = f"{prefix}-{numbers[prefix]:04d}.tif"
        tifffile.imwrite(out_dir / name, render(cls, seed, i, size_range, bit_depths))
        if prefix == "NonCNT":
            label_rows.append((name, cls))
    labels = Path(labels_csv) if labels_csv else out_dir.parent / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(label_rows)
    return labels
