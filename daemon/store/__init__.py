"""Where the jobs live, and the state folder around them.

    jobs.py         the `JobStore` protocol and the records it returns (`Job`, `State`, ...)
    sql.py          the store's rules in SQL, written once for both databases
    sqlite.py       `JobQueue`: SQLite in the state folder, one machine (the default)
    postgres.py     `PostgresStore`: PostgreSQL, every machine of a fleet on one queue
    configured.py   the store a config names, opened (the one place that knows both backends)
    view.py         a read-only view for the dashboard, `/metrics` and the alerts
    steering.py     `cutout retry`, `cutout reprocess` and the dashboard's Retry
    review.py       `cutout review` and the dashboard's Review view: approve, reject, redo
    rebuild.py      a damaged, empty or missing queue: found, refused, rebuilt
    statedir.py     the state folder: its lock and pid, and whether its queue is sound
    session.py      the daemon's life in one record (`session.json`): start, clean stop, what it
                    holds back, its figures; read by status, the dashboard and the next start
    crashreport.py  a fatal signal's traceback (`crash-report.txt`)

May import: `daemon.errors`, `daemon.atomic`, `daemon.pipeline.formats`, `daemon.folders`
and `daemon.settings`. A job is claimed in `sql.py` (`claim`), ended in `finish`/`fail`.
"""
