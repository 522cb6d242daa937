"""The install commands that messages give, in one place, so that every hint is the same and works.

- The distribution, `cutout-daemon`, is not on PyPI. From a checkout the extra is
  installed with `pip install -e '.[birefnet]'`; `pip install 'cutout-daemon[birefnet]'`
  works only where cutout is already installed (pip then reads the extra from the
  installed metadata).
- torchvision's compiled operators load only with the torch they were built for: the
  same release and the same build. A torchvision for another release, or PyPI's CUDA
  torchvision on a CPU-only torch from PyTorch's index, fails alike on import with
  "operator torchvision::nms does not exist". Pinning the installed torch in the same
  pip command makes pip pick the torchvision made for it (and not upgrade torch to a
  newer, on Linux multi-gigabyte CUDA, build); a local build label (`+cpu`, `+cu128`)
  names the PyTorch index that build and its torchvision come from.
"""

from __future__ import annotations

PYTORCH_INDEX = "https://download.pytorch.org/whl/"


def extra_install_command(extra: str) -> str:
    """How to install one of cutout's optional extras, from a checkout or over an installed cutout."""
    return (
        f"pip install -e '.[{extra}]' (in the cutout checkout; where cutout is already installed, "
        f"pip install 'cutout-daemon[{extra}]' works from any folder)"
    )


BIREFNET_EXTRA = extra_install_command("birefnet")
RAW_EXTRA = extra_install_command("raw")
"""rawpy: LibRaw's Python binding, with LibRaw itself inside its wheels (no system library)."""
RAW_UPGRADE = "pip install --upgrade rawpy"
"""A newer rawpy wheel carries a newer LibRaw, which knows newer cameras."""


def torch_build(version: str) -> tuple[str, str | None]:
    """'2.13.0+cpu' -> ('2.13.0', 'cpu'): the release, and the build label of PyTorch's own index."""
    release, _, label = version.partition("+")
    return release, label or None


def matching_torchvision_command(torch_version: str) -> str:
    """Install the torchvision made for this torch, keeping torch exactly as it is."""
    release, label = torch_build(torch_version)
    index = f" --index-url {PYTORCH_INDEX}{label}" if label else ""
    return f"pip install 'torch=={release}' torchvision{index}"


def birefnet_install_command(torch_version: str) -> str:
    """The packages the hub's BiRefNet code imports, with a torchvision that fits this torch."""
    return f"{matching_torchvision_command(torch_version)}, then {BIREFNET_EXTRA}"
