"""The `cutout` command line: parsing, one handler per command, and the process's surroundings.

    main.py       `cutout`'s entry point: parse, build the settings once, dispatch, exit status
    commands.py   one handler per command; the work modules are imported inside them
    context.py    what a command gets besides its arguments: platform, home, caches (the seam
                  tests replace to run any command "on macOS")
    status.py     `cutout status`
    doctor.py     `cutout doctor`
    service.py    `cutout service install|uninstall|status` (on `daemon.service`)
    nativelog.py  what native libraries write to stderr, turned into log events

May import everything; nothing in the package imports it (`daemon.__main__` aside).
"""
