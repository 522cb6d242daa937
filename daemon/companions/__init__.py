"""What runs beside the daemon's work and watches it: measurements, the dashboard, the alerts.

    alongside.py  starts and stops them with the daemon (`alongside()` in `Daemon.setup()`)
    telemetry.py  counts and timings from each `JobRecord`, published for the dashboard and `/metrics`
    monitor.py    what is worth an alert, found by looking from outside the worker's path
    alerts.py     grouped, rate-limited messages to a webhook or the desktop (an alert is sent here)
    dashboard/    the local web page (`cutout dashboard`, or `dashboard.enabled`)

Nothing here is on the worker's path: the store is read through its read-only view.

May import: `daemon.work.record` and everything below the work (`daemon.store`,
`daemon.folders`, `daemon.settings`, the foundation); never `daemon.watch` or `daemon.cli`.
"""
