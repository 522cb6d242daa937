"""Cutout: a hot-folder background remover (BiRefNet cutouts as cropped RGBA PNGs)."""

__version__ = "0.1.0"
