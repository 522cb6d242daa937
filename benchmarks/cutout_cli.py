"""`python -m benchmarks.cutout_cli ARGS` = `cutout ARGS`, with the stand-in's operator registered.

The stand-in model's sleep is a custom TorchScript operator that must exist
before `torch.jit.load`; importing `benchmarks.standin` registers it. Nothing
else differs from `cutout` / `python -m daemon`: the same `daemon.cli.main.main()`.
"""

import sys

import benchmarks.standin  # noqa: F401  (registers cutout_bench::wait_ms)
from daemon.cli.main import main

sys.exit(main())
