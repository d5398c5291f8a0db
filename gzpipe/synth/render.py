"""Render a galaxy's parameters to a 424x424 gri-like RGB image (numpy, float32, vectorised).

Components are summed in three bands with their own colours (bulge red, disk and arms blue, stars white),
blurred by a Gaussian PSF, given sky noise, and mapped to 8 bits with an asinh stretch like SDSS composites.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from gzpipe.synth.params import GalaxyParams

SIZE = 424
RENDER = 212  # the light is computed on a half-resolution grid (4x faster), then upsampled: real GZ2 cutouts are
# resampled, PSF-smooth images too, so nothing is lost that a volunteer would see
# Band weights (g, r, i) -> RGB channels are (i, r, g) as in SDSS gri composites.
_BULGE = np.array([0.55, 0.85, 1.0], dtype=np.float32)
_DISK = np.array([0.85, 0.8, 0.7], dtype=np.float32)
_ARMS = np.array([1.0, 0.75, 0.55], dtype=np.float32)
_STAR = np.array([0.95, 0.95, 0.95], dtype=np.float32)

_STEP = SIZE / RENDER
_Y, _X = (np.mgrid[0:RENDER, 0:RENDER].astype(np.float32) - (RENDER - 1) / 2.0) * _STEP  # full-res pixel units


def _sersic_b(n: float) -> float:
    return 2.0 * n - 1.0 / 3.0 + 0.009876 / n


def _rotated(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, -x * s + y * c


def _galaxy_light(p: GalaxyParams, x: np.ndarray, y: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(3, H, W) light of one galaxy centred at x = y = 0."""
    xr, yr = _rotated(x, y, p.position_angle)
    q = max(p.axis_ratio, 0.1)
    r_ell = np.sqrt(xr * xr + (yr / q) ** 2) + 1e-3  # elliptical radius in the galaxy's plane
    out = np.zeros((3,) + x.shape, dtype=np.float32)

    if p.bulge_to_total > 0:
        qb = q if p.kind == "elliptical" else max(q, 0.55)  # bulges stay rounder than the disk they sit in
        rb = np.sqrt(xr * xr + (yr / qb) ** 2) + 1e-3
        b = _sersic_b(p.sersic_n)
        re = p.r_eff * scale
        bulge = np.exp(-b * ((rb / re) ** (1.0 / p.sersic_n) - 1.0)).astype(np.float32)
        bulge = np.minimum(bulge, 60.0) * (p.bulge_to_total * 0.05)
        if p.bar_strength > 0:  # boxy/peanut bulge of an edge-on barred disk
            bulge *= 1.0 + 0.4 * p.bar_strength * np.exp(-((np.abs(yr) - 0.6 * re) ** 2) / (0.3 * re) ** 2)
        out += _BULGE[:, None, None] * bulge

    if p.bulge_to_total < 1 and p.kind == "disk":
        rd = p.r_disk * scale
        disk = np.exp(-r_ell / rd).astype(np.float32) * ((1 - p.bulge_to_total) * 0.6 / np.sqrt(q))
        light = _DISK[:, None, None] * disk
        if p.n_arms > 0 and p.arm_strength > 0:
            theta = np.arctan2(yr / q, xr)
            wind = 1.0 / np.tan(np.radians(p.pitch_deg))
            phase = p.n_arms * (theta - wind * np.log(r_ell / rd))
            arms = np.maximum(np.cos(phase), 0.0) ** 3  # sharp arms
            ramp = np.clip(r_ell / (1.2 * p.r_eff * scale) - 0.5, 0.0, 1.0)  # arms start outside the bulge
            light += _ARMS[:, None, None] * (disk * 1.8 * p.arm_strength * arms * ramp)
            light *= 1.0 - 0.45 * p.arm_strength * ramp * (1 - arms)  # inter-arm regions are darker
        if p.bar_strength > 0:
            bl = 1.6 * p.r_eff * scale + 0.4 * rd
            bar = np.exp(-((xr / bl) ** 2 + (yr / (0.22 * bl * q + 1.0)) ** 2) ** 1.5)
            light += _DISK[:, None, None] * (bar * p.bar_strength * 0.5 * (1 - p.bulge_to_total))
        out += light
    return out


def render(p: GalaxyParams, rng: np.random.Generator) -> Image.Image:
    """The galaxy as a 424x424 RGB PIL image."""
    light = _galaxy_light(p, _X, _Y)
    if p.merger > 0:
        # Tidal tail: a curved, stretched copy of the disk light, plus a close companion.
        ang = rng.uniform(0, 2 * np.pi)
        xt, yt = _rotated(_X, _Y, ang)
        tail = np.exp(-(((yt - 0.004 * xt**2) / 8.0) ** 2) - (np.abs(xt) / 70.0)) * (xt > 0)
        light += _DISK[:, None, None] * (tail * p.merger * 0.25).astype(np.float32)
    if p.companion:
        d = rng.uniform(25, 70) if p.merger > 0 else rng.uniform(70, 160)
        a = rng.uniform(0, 2 * np.pi)
        comp = GalaxyParams(**{**p.as_dict(), "kind": "elliptical", "bulge_to_total": 1.0, "sersic_n": 2.0,
                               "r_eff": p.r_eff * rng.uniform(0.4, 0.8), "axis_ratio": rng.uniform(0.5, 1.0),
                               "bar_strength": 0.0, "n_arms": 0, "position_angle": rng.uniform(0, np.pi)})
        light += _galaxy_light(comp, _X - d * np.cos(a), _Y - d * np.sin(a)) * rng.uniform(0.3, 0.8)
    if p.star > 0:
        sx, sy = (rng.normal(0, 6), rng.normal(0, 6)) if p.kind == "star" else rng.uniform(-60, 60, 2)
        r2 = (_X - sx) ** 2 + (_Y - sy) ** 2
        star = np.exp(-r2 / 8.0) * 3.0 * p.star + np.exp(-r2 / 80.0) * 0.3 * p.star
        spikes = (np.exp(-np.abs(_X - sx) / 0.8) + np.exp(-np.abs(_Y - sy) / 0.8)) * np.exp(-np.sqrt(r2) / 25.0)
        light += _STAR[:, None, None] * (star + 0.3 * p.star * spikes).astype(np.float32)

    light *= p.brightness
    light += rng.normal(0.0, p.sky_noise, size=light.shape).astype(np.float32)
    img = np.arcsinh(np.maximum(light, 0.0) * 10.0) / np.arcsinh(10.0)  # SDSS-like asinh stretch
    rgb = (np.clip(img.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    pil = Image.fromarray(rgb[..., ::-1].copy(), "RGB")  # bands (g, r, i) -> channels (i, r, g)
    pil = pil.filter(ImageFilter.GaussianBlur(p.psf_sigma / _STEP))
    return pil.resize((SIZE, SIZE), Image.BILINEAR)
