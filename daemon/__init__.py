"""Cutout: a hot-folder background remover (BiRefNet cutouts as cropped RGBA PNGs).

The package, one room per concept, each importing only the rooms above it in this list
(tests/test_architecture.py holds the order; ARCHITECTURE.md draws it):

    errors.py     every error we raise on purpose, one tree; its leaves are the quarantine reasons
    atomic.py     durable, all-or-nothing file writes
    pipeline/     the seed's image pipeline and the built-in BiRefNet, usable alone
    service/      the launchd agent and the systemd unit
    folders/      which files are inputs, their output names, every operation in our folders
    settings.py   the one frozen settings object, built once at the entry point
    logs.py       structlog and the warnings filters, set once at start
    store/        the job stores (SQLite, PostgreSQL) and the state folder around them
    models/       the model's weights: fetched, pinned, loaded
    work/         jobs through the model: the worker, the overlapped stages, `cutout process`
    companions/   beside the work: telemetry, the dashboard, monitoring and alerts
    watch/        `cutout watch`: the daemon's life and the watch thread
    cli/          the `cutout` command line
    testing.py    stand-ins shared by the tests and the benchmarks
"""

__version__ = "0.1.0"
