"""Camera profiles and case mix of the synthetic hospitals ("sites")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SiteProfile:
    """How one hospital's camera renders a fundus, and which grades it sees how often."""

    name: str
    colour: tuple[float, float, float] = (0.78, 0.38, 0.16)
    """Mean fundus colour (RGB, 0-1) after the camera's colour cast."""
    contrast: tuple[float, float, float] = (0.11, 0.09, 0.05)
    """Typical per-channel standard deviation inside the field."""
    vignetting: float = 0.35
    """How much darker the rim of the field is than its centre (0-1)."""
    blur: float = 0.6
    """Optics blur, in pixels at 128 px."""
    resolution: float = 1.0
    """Sensor resolution relative to the output (below 1: captured smaller, upscaled)."""
    noise: float = 0.012
    """Sensor noise standard deviation (0-1 scale)."""
    prevalence: tuple[float, float, float, float, float] = (0.50, 0.14, 0.20, 0.09, 0.07)
    """Share of grades 0-4 among patients."""
    ungradable: float = 0.08
    """Share of images too poor to grade."""
    dust: float = 1.5
    """Mean number of dust spots on the lens (dark dots that are not lesions)."""
    label_noise: float = 0.08
    """Share of gradable images whose recorded grade is one step off (grader disagreement)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a site needs a name")
        if len(self.prevalence) != 5 or abs(sum(self.prevalence) - 1.0) > 1e-6:
            raise ValueError(f"site {self.name}: prevalence must be 5 shares summing to 1")
        if min(self.prevalence) < 0:
            raise ValueError(f"site {self.name}: prevalence shares must be >= 0")
        for field in ("ungradable", "label_noise"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"site {self.name}: {field} must be in [0, 1)")
        if not 0.25 <= self.resolution <= 1.0:
            raise ValueError(f"site {self.name}: resolution must be in [0.25, 1]")
        if self.blur < 0 or self.noise < 0 or self.dust < 0:
            raise ValueError(f"site {self.name}: blur, noise and dust must be >= 0")

    @property
    def colour_array(self) -> np.ndarray:
        """Mean colour as a float32 array of 3."""
        return np.asarray(self.colour, dtype=np.float32)


SITES: dict[str, SiteProfile] = {
    p.name: p
    for p in (
        SiteProfile("site-a"),
        SiteProfile(
            "site-b",
            colour=(0.72, 0.33, 0.20),
            vignetting=0.45,
            blur=0.9,
            prevalence=(0.58, 0.15, 0.16, 0.06, 0.05),
            dust=2.5,
        ),
        SiteProfile(
            "site-c",
            colour=(0.83, 0.44, 0.13),
            contrast=(0.09, 0.10, 0.04),
            vignetting=0.25,
            blur=0.4,
            resolution=0.8,
            noise=0.018,
            prevalence=(0.42, 0.14, 0.24, 0.11, 0.09),
            ungradable=0.10,
        ),
        SiteProfile(
            "site-d",
            colour=(0.66, 0.36, 0.22),
            contrast=(0.12, 0.08, 0.06),
            vignetting=0.50,
            blur=1.0,
            resolution=0.7,
            prevalence=(0.55, 0.12, 0.19, 0.08, 0.06),
            ungradable=0.12,
            dust=0.8,
        ),
        SiteProfile(
            "site-e",
            colour=(0.80, 0.40, 0.18),
            contrast=(0.10, 0.10, 0.05),
            vignetting=0.30,
            blur=0.7,
            resolution=0.9,
            noise=0.008,
            prevalence=(0.48, 0.16, 0.20, 0.09, 0.07),
            dust=1.0,
        ),
    )
}
"""The built-in sites. site-e is held out of training by default (the "unseen hospital")."""


def get_site(name: str) -> SiteProfile:
    """The built-in site called ``name``."""
    try:
        return SITES[name]
    except KeyError:
        raise ValueError(f"unknown site {name!r}; built-in sites: {', '.join(SITES)}") from None
