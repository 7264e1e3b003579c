"""Parity tests run in the `parity` tox environment (PyTorch beside kerastl's stack). The
harness lives in benchmarks/parity: benchmarks/ goes on the path, as for tests/benchmarks."""

import os
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
