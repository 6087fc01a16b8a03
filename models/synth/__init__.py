"""Synthetic fundus photographs by site: the data every test and the demo use."""

from models.synth.generator import generate
from models.synth.profiles import SITES, SiteProfile, get_site

__all__ = ["SITES", "SiteProfile", "generate", "get_site"]
