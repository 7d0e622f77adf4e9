"""Thin wrapper, kept for old references: the scan benchmark is ``ssamba bench scan``
(:mod:`ssamba.benchmarks.scan`). ``python benchmarks/bench_scan.py [options]`` takes the
same options as ``ssamba bench scan``."""

import sys

from ssamba.benchmarks.scan import main

if __name__ == "__main__":
    sys.exit(main())
