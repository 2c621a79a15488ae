"""Benchmarks of a source checkout (not part of the installed package): `python -m benchmarks SUITE` and the
recipe scripts `python -m benchmarks.<name>`.

The library has no default data folder; a checkout keeps the shared data sets beside it, at `../shared/data`, so
importing this package sets $SIMSEARCH_DATA to that folder unless it already names one.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_ENV = "SIMSEARCH_DATA"
DEFAULT_DATA = REPO.parent / "shared" / "data"

if not os.environ.get(DATA_ENV):
    os.environ[DATA_ENV] = str(DEFAULT_DATA)
