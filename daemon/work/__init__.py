"""Jobs through the model: the worker of `cutout watch` and the engine of `cutout process`.

    stages.py   the CPU stages overlapped with the one model: decode ahead, encode behind
    worker.py   queue jobs through the stages, and what each outcome means (done, review, retry, quarantine)
    shelf.py    which model a job gets: the daemon's, or one a person chose for it (loaded when needed)
    batch.py    `cutout process IN OUT`: one pass over a folder, on the same stages
    record.py   `JobRecord`: one job's end, handed to the log and to the telemetry alike

A job is claimed in `worker.py` (`Worker.run_once` asks the store), its pixels are computed in
`daemon.pipeline` (called from `stages.py`), and it is published by `daemon.folders.outputs`.

May import: everything below it (`daemon.store`, `daemon.models`, `daemon.folders`,
`daemon.settings`, `daemon.pipeline`, the foundation); never what runs beside it
(`daemon.companions`) or above it (`daemon.watch`, `daemon.cli`).
"""
