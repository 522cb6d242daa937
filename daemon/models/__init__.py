"""The model's weights on this machine: fetched once, pinned to a commit, loaded offline.

    fetch.py              `cutout model fetch`: the hub snapshot, the pin file, the load plan
    loading.py            the configured model, opened (imports torch: only commands that run it)
    torchvision_check.py  does torchvision fit the installed torch (`cutout doctor`)

May import: `daemon.errors`, `daemon.atomic`, `daemon.pipeline` and `daemon.settings`.
"""
