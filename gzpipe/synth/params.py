"""Physical parameters of a synthetic galaxy, drawn from a seeded generator.

Each galaxy is a Sersic bulge plus an exponential disk (either may be absent), seen at an inclination, with an
optional bar, logarithmic spiral arms, a companion or merger, and, rarely, a foreground star or artifact.
The volunteers (``volunteers.py``) answer the GZ2 questions from these numbers, so a model that sees the
rendered image can learn the vote fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class GalaxyParams:
    kind: str  # "elliptical" | "disk" | "star"  (the truth the volunteers react to)
    bulge_to_total: float  # 0 (pure disk) .. 1 (pure bulge)
    sersic_n: float  # bulge Sersic index
    r_eff: float  # bulge effective radius, pixels
    r_disk: float  # disk scale length, pixels
    axis_ratio: float  # apparent b/a of the whole galaxy (ellipticals: intrinsic shape; disks: from inclination)
    inclination_deg: float  # 0 face-on .. 90 edge-on (disks)
    position_angle: float  # radians
    bar_strength: float  # 0 none .. 1 strong
    n_arms: int  # 0 = no arms
    arm_strength: float  # 0 .. 1
    pitch_deg: float  # spiral pitch angle; small = tightly wound
    merger: float  # 0 none .. 1 strong tidal disturbance with a companion
    companion: bool  # a small neighbour in the frame
    star: float  # 0 .. 1 brightness of a foreground point source on the galaxy
    brightness: float  # total flux scale
    redshift: float  # used only to fake the Hart16 debiasing
    psf_sigma: float  # pixels
    sky_noise: float

    def as_dict(self) -> dict:
        return asdict(self)


def draw_params(rng: np.random.Generator) -> GalaxyParams:
    u = rng.random()
    kind = "elliptical" if u < 0.38 else ("disk" if u < 0.97 else "star")
    if kind == "elliptical":
        bt = rng.uniform(0.8, 1.0)
        incl = 0.0
        q = rng.uniform(0.3, 1.0) ** 0.7
        n_arms, arm, pitch, bar = 0, 0.0, 0.0, 0.0
    else:
        bt = float(np.clip(rng.beta(1.6, 3.2), 0.0, 0.9))
        incl = float(np.degrees(np.arccos(rng.uniform(0.02, 1.0))))
        q = max(float(np.cos(np.radians(incl))), 0.12)
        has_arms = rng.random() < 0.7 * (1 - bt)
        n_arms = int(rng.choice([1, 2, 2, 2, 3, 3, 4, 5, 6])) if has_arms else 0
        arm = float(rng.uniform(0.35, 1.0)) if has_arms else 0.0
        pitch = float(rng.uniform(8, 40)) if has_arms else 0.0
        bar = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.35 else 0.0
    if kind == "star":
        bt, q, incl = 1.0, 1.0, 0.0
    merger = float(rng.uniform(0.4, 1.0)) if rng.random() < 0.12 else 0.0
    return GalaxyParams(
        kind=kind,
        bulge_to_total=float(bt),
        sersic_n=float(rng.uniform(2.5, 5.0) if kind == "elliptical" else rng.uniform(1.0, 3.5)),
        r_eff=float(rng.uniform(6, 18)),
        r_disk=float(rng.uniform(16, 40)),
        axis_ratio=float(q),
        inclination_deg=float(incl),
        position_angle=float(rng.uniform(0, np.pi)),
        bar_strength=float(bar),
        n_arms=int(n_arms),
        arm_strength=float(arm),
        pitch_deg=float(pitch),
        merger=merger,
        companion=bool(merger > 0 or rng.random() < 0.08),
        star=float(rng.uniform(0.5, 1.0)) if kind == "star" or rng.random() < 0.03 else 0.0,
        brightness=float(rng.lognormal(0.0, 0.35)),
        redshift=float(rng.uniform(0.01, 0.25)),
        psf_sigma=float(rng.uniform(0.8, 2.0)),
        sky_noise=float(rng.uniform(0.004, 0.012)),
    )
