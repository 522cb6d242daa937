"""`cutout watch`: the daemon's life, and the watch thread that feeds its queue.

    runner.py   the life: start-up checks, setup / run_once / teardown, signals, exit statuses
    tick.py     the watch thread's work, one tick at a time: volume, watcher role, settling,
                rescans, the fleet's heartbeat
    settle.py   finding settled files: watchdog events as hints, the file itself as the truth
    guard.py    the memory guard: too large, or its share of images done, the daemon starts afresh

May import: everything below it (`daemon.companions`, `daemon.work`, `daemon.store`,
`daemon.models`, `daemon.folders`, `daemon.settings`, the foundation); never `daemon.cli`.
"""
