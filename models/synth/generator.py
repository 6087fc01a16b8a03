"""Vectorised synthetic fundus photographs with ICDR-graded lesions, by site and seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from models.datasets import UNKNOWN_GRADE, FundusArrays
from models.synth.anatomy import DISC_X, new_vessel_bank, vessel_bank
from models.synth.profiles import SiteProfile

_CHUNK = 64
# (mean count of microaneurysms, haemorrhages, exudates, cotton-wool spots) per grade
_LESION_RATES = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [3.0, 0.0, 0.0, 0.0],
        [5.0, 3.0, 3.0, 0.6],
        [7.0, 14.0, 5.0, 1.5],
        [6.0, 8.0, 4.0, 1.0],
    ],
    dtype=np.float64,
)
_ABSORB = np.array(
    [
        [0.25, 0.40, 0.40],  # macula
        [0.20, 0.50, 0.45],  # vessels
        [0.18, 0.40, 0.36],  # new vessels
        [0.55, 1.30, 1.20],  # red lesions
        [0.60, 0.60, 0.60],  # lens dust
    ],
    dtype=np.float32,
)
_EMIT = np.array(
    [
        [0.22, 0.30, 0.22],  # optic disc
        [0.25, 0.28, 0.05],  # hard exudates
        [0.12, 0.15, 0.12],  # cotton-wool spots
    ],
    dtype=np.float32,
)
_UNGRADABLE_KINDS = ("blur", "dark", "bright", "off_centre", "occlusion")


@dataclass(frozen=True)
class _Batch:
    """Per-image draws for one chunk."""

    grade: np.ndarray
    right_eye: np.ndarray
    ungradable: np.ndarray
    rng: np.random.Generator
    size: int


def _interp_matrix(out: int, inp: int) -> np.ndarray:
    """Linear interpolation from ``inp`` samples to ``out`` (out x inp), as a matrix."""
    pos = np.linspace(0, inp - 1, out)
    lo = np.clip(np.floor(pos).astype(int), 0, inp - 2)
    frac = pos - lo
    m = np.zeros((out, inp), np.float32)
    m[np.arange(out), lo] = 1 - frac
    m[np.arange(out), lo + 1] += frac
    return m


def _area_matrix(out: int, inp: int) -> np.ndarray:
    """Box averaging from ``inp`` samples down to ``out`` (out x inp)."""
    edges = np.linspace(0, inp, out + 1)
    centres = np.arange(inp) + 0.5
    m = ((centres[None] >= edges[:-1, None]) & (centres[None] < edges[1:, None])).astype(np.float32)
    return m / m.sum(1, keepdims=True)


def _optics_matrix(size: int, site: SiteProfile) -> np.ndarray:
    """One axis of the camera's optics: a smaller sensor upscaled, then lens blur (size x size)."""
    m = np.eye(size, dtype=np.float32)
    if site.resolution < 1.0:
        small = max(round(size * site.resolution), 8)
        m = _interp_matrix(size, small) @ _area_matrix(small, size)
    sigma = site.blur * size / 128.0
    if sigma > 0:
        ax = np.arange(size, dtype=np.float32)
        g = np.exp(-((ax[:, None] - ax[None]) ** 2) / (2 * sigma**2))
        g[g < 1e-6] = 0.0  # far tails are denormal floats, which make matmul crawl
        m = (g / g.sum(1, keepdims=True)) @ m
    return m


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _sample_points(rng: np.random.Generator, counts: np.ndarray, spread: float) -> tuple:
    """Lesion positions for each image: (image index, x, y), biased to the posterior pole."""
    img = np.repeat(np.arange(len(counts)), counts)
    radius = spread * np.sqrt(rng.random(len(img)))
    theta = rng.uniform(0, 2 * np.pi, len(img))
    return img, radius * np.cos(theta), radius * np.sin(theta)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """A square Gaussian stamp with unit peak."""
    r = max(int(np.ceil(3 * sigma)), 1)
    ax = np.arange(-r, r + 1, dtype=np.float32)
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return np.outer(g, g)


def _blobs(
    b: _Batch, counts: np.ndarray, sigma: float, amp: tuple[float, float], spread: float = 0.8
) -> np.ndarray:
    """Gaussian spots (B x S x S) of unit peak times a random amplitude, stamped at points."""
    s = b.size
    canvas = np.zeros((len(counts), s, s), np.float32)
    img, x, y = _sample_points(b.rng, counts, spread)
    if not len(img):
        return canvas
    kernel = _gaussian_kernel(max(sigma * s / 128.0, 0.35))
    r = kernel.shape[0] // 2
    ci = ((y + 1) * 0.5 * (s - 1)).round().astype(np.int64)
    cj = ((x + 1) * 0.5 * (s - 1)).round().astype(np.int64)
    di, dj = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    ii = ci[:, None, None] + di
    jj = cj[:, None, None] + dj
    val = b.rng.uniform(*amp, len(img)).astype(np.float32)[:, None, None] * kernel
    ok = (ii >= 0) & (ii < s) & (jj >= 0) & (jj < s)
    kk = np.broadcast_to(img[:, None, None], ii.shape)
    np.add.at(canvas, (kk[ok], ii[ok], jj[ok]), val[ok])
    return canvas


def _lesions(b: _Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Red (dark) lesion map, bright lesion map and white (cotton-wool) map, B x S x S."""
    n = len(b.grade)
    rng = b.rng
    # grade 4 shows a moderate or severe background; its own mark is new vessels
    background = np.where(b.grade == 4, rng.choice([2, 3], n), b.grade)
    rates = _LESION_RATES[background]
    strength = rng.uniform(0.55, 1.15, n).astype(np.float32)[:, None, None]
    ma = rng.poisson(rates[:, 0]) + (b.grade == 1)
    haem = rng.poisson(rates[:, 1]) + (b.grade >= 2) * (rng.random(n) < 0.8)
    exu = rng.poisson(rates[:, 2])
    cws = rng.poisson(rates[:, 3])
    red = _blobs(b, ma, 0.55, (0.35, 0.7))
    red += _blobs(b, haem, 1.6, (0.35, 0.8))
    red += _blobs(b, haem // 3, 2.6, (0.3, 0.6))
    bright = _blobs(b, exu * 3, 0.8, (0.3, 0.7), spread=0.55)
    white = _blobs(b, cws, 2.8, (0.25, 0.45), spread=0.7)
    return np.clip(red * strength, 0, 1), np.clip(bright * strength, 0, 1), white * strength


def _new_vessels(b: _Batch, disc_x: np.ndarray) -> np.ndarray:
    """New-vessel tufts (B x S x S) for grade 4: at the disc or elsewhere."""
    s = b.size
    out = np.zeros((len(b.grade), s, s), np.float32)
    bank = new_vessel_bank(s)
    k = bank.shape[1]
    for idx in np.flatnonzero(b.grade == 4):
        for _ in range(b.rng.integers(1, 4)):
            near_disc = b.rng.random() < 0.6
            cx = disc_x[idx] if near_disc else b.rng.uniform(-0.5, 0.5)
            cy = b.rng.normal(0, 0.12) if near_disc else b.rng.uniform(-0.5, 0.5)
            i0 = int(np.clip((cy + 1) * 0.5 * (s - 1) - k // 2, 0, s - k))
            j0 = int(np.clip((cx + 1) * 0.5 * (s - 1) - k // 2, 0, s - k))
            tuft = bank[b.rng.integers(len(bank))] * b.rng.uniform(0.6, 1.0)
            out[idx, i0 : i0 + k, j0 : j0 + k] = np.maximum(
                out[idx, i0 : i0 + k, j0 : j0 + k], tuft
            )
    return out


def _render(b: _Batch, site: SiteProfile) -> np.ndarray:
    """Float RGB images (B x S x S x 3) in 0-1 and their field masks."""
    n, s, rng = len(b.grade), b.size, b.rng
    xx, yy = _grid(s)
    side = np.where(b.right_eye, 1.0, -1.0).astype(np.float32)
    disc_x = side * (DISC_X + rng.normal(0, 0.02, n)).astype(np.float32)
    disc_y = rng.normal(0, 0.03, n).astype(np.float32)
    dx = xx[None] - disc_x[:, None, None]
    dy = yy[None] - disc_y[:, None, None]
    disc = np.exp(-(((dx**2 + dy**2) / (2 * 0.07**2)) ** 2))
    mac_x = disc_x - side * 0.45
    macula = np.exp(-((xx[None] - mac_x[:, None, None]) ** 2 + yy[None] ** 2) / (2 * 0.13**2))
    rho2 = xx**2 + yy**2
    # choroidal texture: smooth low-frequency noise
    up = _interp_matrix(s, 8)
    texture = up @ rng.standard_normal((n, 8, 8), dtype=np.float32) @ up.T

    normal, beaded = vessel_bank(s)
    pick = rng.integers(len(normal), size=n)
    bead = (b.grade >= 3) & (rng.random(n) < 0.65)
    vessels = np.where(bead[:, None, None], beaded[pick], normal[pick])
    vessels = np.where(b.right_eye[:, None, None], vessels, vessels[:, :, ::-1])

    red, bright, white = _lesions(b)
    nv = _new_vessels(b, disc_x)
    dust = _blobs(b, rng.poisson(site.dust, n), 1.2, (0.15, 0.3), spread=0.9)

    illum = (1.0 - site.vignetting * rho2)[None] * (1 + 0.04 * texture)
    # what darkens the fundus, per plane and channel (absorption, applied as exp(-x))
    absorb = np.stack([macula, vessels, nv, red, dust], -1) @ _ABSORB
    emit = np.stack([disc, bright, white], -1) @ _EMIT
    img = (illum[..., None] * site.colour_array) * np.exp(-absorb) + emit
    return img.astype(np.float32)


def _camera(img: np.ndarray, mask: np.ndarray, b: _Batch, site: SiteProfile) -> np.ndarray:
    """Optics, sensor resolution, exposure normalisation and noise."""
    n, s, rng = img.shape[0], b.size, b.rng
    img = np.einsum(
        "ij,bjkc,lk->bilc", _optics_matrix(s, site), img, _optics_matrix(s, site), optimize=True
    )
    # auto-exposure: each image's in-field mean and spread per channel are drawn from the
    # camera's profile, independent of the grade, so global colour statistics carry no label
    m = mask[..., None]
    area = m.sum((1, 2), keepdims=True)
    mean = (img * m).sum((1, 2), keepdims=True) / area
    std = np.sqrt((((img - mean) * m) ** 2).sum((1, 2), keepdims=True) / area) + 1e-6
    target_mean = site.colour_array * rng.uniform(0.8, 1.15, (n, 1, 1, 1)).astype(np.float32)
    target_std = np.asarray(site.contrast, np.float32) * rng.uniform(0.85, 1.15, (n, 1, 1, 3))
    img = (img - mean) / std * target_std.astype(np.float32) + target_mean
    img += site.noise * rng.standard_normal(img.shape, dtype=np.float32)
    return img * m


def _ungradable(img: np.ndarray, b: _Batch) -> np.ndarray:
    """Spoil the images flagged ungradable, one defect each."""
    rng, s = b.rng, b.size
    xx, yy = _grid(s)
    for idx in np.flatnonzero(b.ungradable):
        kind = _UNGRADABLE_KINDS[rng.integers(len(_UNGRADABLE_KINDS))]
        im = img[idx]
        if kind == "blur":
            im = gaussian_filter(
                im, (rng.uniform(3.0, 5.0) * s / 128, rng.uniform(3, 5) * s / 128, 0)
            )
        elif kind == "dark":
            im = im * rng.uniform(0.08, 0.2)
        elif kind == "bright":
            im = np.clip(im * rng.uniform(2.2, 3.5) + 0.25 * (im.max(-1, keepdims=True) > 0), 0, 1)
        elif kind == "off_centre":
            shift = (rng.choice([-1, 1], 2) * rng.uniform(0.3, 0.45, 2) * s).astype(int)
            im = np.roll(im, tuple(shift), axis=(0, 1))
            if shift[0] > 0:
                im[: shift[0]] = 0
            else:
                im[shift[0] :] = 0
            if shift[1] > 0:
                im[:, : shift[1]] = 0
            else:
                im[:, shift[1] :] = 0
        else:  # occlusion: eyelid/eyelash shadow covering a large part of the field
            angle = rng.uniform(0, 2 * np.pi)
            edge = np.cos(angle) * xx + np.sin(angle) * yy
            shade = 1 / (1 + np.exp(-(edge - rng.uniform(-0.3, 0.1)) * 12))
            im = im * (1 - 0.9 * shade[..., None])
        img[idx] = im
    return img


def _patients(
    site: SiteProfile, n: int, rng: np.random.Generator, start: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grades, eye sides and patient ids: two eyes per patient, similar but not equal grades."""
    pairs = (n + 1) // 2
    base = rng.choice(5, pairs, p=np.asarray(site.prevalence))
    other = np.clip(base - (rng.random(pairs) < 0.3), 0, 4)
    grade = np.stack([base, other], 1).reshape(-1)[:n]
    right = np.tile([True, False], pairs)[:n]
    pid = np.repeat(np.arange(start, start + pairs), 2)[:n]
    patient = np.char.add(f"{site.name}-", np.char.zfill(pid.astype(str), 6))
    return grade.astype(np.int64), right, patient


def generate(site: SiteProfile, n: int, *, size: int = 128, seed: int = 0) -> FundusArrays:
    """``n`` synthetic fundus photographs from ``site``, deterministic by ``seed``.

    Ungradable images carry grade -1. A few gradable images carry a grade one step off the
    lesions drawn (the site's ``label_noise``), as human graders disagree.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 32 <= size <= 1024:
        raise ValueError(f"size must be between 32 and 1024 pixels, got {size}")
    root = np.random.SeedSequence([seed, *site.name.encode()])
    grades, rights, patients, images, gradables = [], [], [], [], []
    xx, yy = _grid(size)
    for c, child in enumerate(root.spawn((n + _CHUNK - 1) // _CHUNK)):
        rng = np.random.default_rng(child)
        m = min(_CHUNK, n - c * _CHUNK)
        grade, right, patient = _patients(site, m, rng, c * _CHUNK)
        b = _Batch(grade, right, rng.random(m) < site.ungradable, rng, size)
        radius = rng.uniform(0.92, 0.99, m).astype(np.float32)[:, None, None]
        mask = ((xx**2 + yy**2)[None] <= radius**2).astype(np.float32)
        img = _camera(_render(b, site), mask, b, site)
        img = _ungradable(img, b)
        recorded = grade.copy()
        flip = (rng.random(m) < site.label_noise) & ~b.ungradable
        recorded[flip] = np.clip(grade[flip] + rng.choice([-1, 1], flip.sum()), 0, 4)
        recorded[b.ungradable] = UNKNOWN_GRADE
        images.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        grades.append(recorded)
        gradables.append(~b.ungradable)
        rights.append(right)
        patients.append(patient)
    return FundusArrays(
        images=np.concatenate(images),
        grade=np.concatenate(grades),
        gradable=np.concatenate(gradables),
        site=np.full(n, site.name),
        patient=np.concatenate(patients),
    )
