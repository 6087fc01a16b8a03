"""Synthetic fundus photographs by site: the data every test and the demo use."""

from models.synth.camera import CameraOptions, CameraSet, camera_jpeg, write_camera_set
from models.synth.generator import generate
from models.synth.profiles import SITES, SiteProfile, get_site

__all__ = [
    "SITES",
    "CameraOptions",
    "CameraSet",
    "SiteProfile",
    "camera_jpeg",
    "generate",
    "get_site",
    "write_camera_set",
]
