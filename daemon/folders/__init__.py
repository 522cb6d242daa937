"""The daemon's folders: which files are inputs, the names their outputs get, and every file
operation made in the hot, output, quarantine and archive folders.

    layout.py     which files are inputs, and each one's output name (a/b/c.jpg -> a/b/c.png)
    routing.py    which recipes a file gets, and every name they write
    outputs.py    the `Folders`, the rules on where they may be, and the daemon's file operations
                  in them: publishing a cut-out atomically, quarantining with its .error.json,
                  keeping, archiving or deleting the original
    beneath.py    file operations beneath one of our folders, never through a planted link
    claims.py     one daemon (or one fleet) per hot and output folder: the `.cutout-claim.json`
    volume.py     whether the hot folder's volume is there (a NAS that drops pauses the daemon)
    review.py     the review folder's moves: approve into the output folder, reject into quarantine

May import: `daemon.errors`, `daemon.atomic`, `daemon.pipeline` (formats and recipes, both
torch-free). Never the settings: the settings are built from these types, not the other way.
"""
