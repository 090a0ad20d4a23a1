"""Hypothesis profiles for the fuzz targets.

The default run (CI) tries a few hundred inputs per target in seconds, with
no example database, derandomized: the same inputs every run, so CI is
reproducible; the long run explores. The long run, for a machine left alone:

    LBCORE_FUZZ=long python -m pytest tests/fuzz -p no:cacheprovider --timeout 0 -x

tries LBCORE_FUZZ_EXAMPLES (default 20000) inputs per target (a quarter
of that against the live lbcore) and keeps
what it found in tests/fuzz/.hypothesis (not committed), so a second run
starts from the failures of the first. A failing input it reports belongs
in tests/fuzz/corpus/<target>/ (a file per input), where every later run
starts from it.
"""

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci", max_examples=int(os.environ.get("LBCORE_FUZZ_EXAMPLES", "200")), deadline=None,
    database=None, suppress_health_check=QUIET, derandomize=True)
settings.register_profile(
    "long", max_examples=int(os.environ.get("LBCORE_FUZZ_EXAMPLES", "20000")), deadline=None,
    database=DirectoryBasedExampleDatabase(str(Path(__file__).parent / ".hypothesis")),
    suppress_health_check=QUIET)
settings.load_profile(os.environ.get("LBCORE_FUZZ", "ci"))
