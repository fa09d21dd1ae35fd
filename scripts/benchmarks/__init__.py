"""Benchmark sections for ``scripts/bench.py``: one module per hot path.

Each module defines ``add_arguments(parser)`` (its own ``--<name>-*`` options) and
``bench(args) -> Section``; register it in ``MODULES`` under its ``--only`` name.
"""

MODULES = {
    "images": "scripts.benchmarks.images",
    "scan": "scripts.benchmarks.scan",
    "scan_pretrain": "scripts.benchmarks.scan_pretrain",
    "nlg": "scripts.benchmarks.nlg",
    "dqn": "scripts.benchmarks.dqn",
    "canonicalize": "scripts.benchmarks.canonicalize",
}
