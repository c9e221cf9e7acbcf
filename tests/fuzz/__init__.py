"""
Property-based fuzzing of the parsers with hypothesis.  `make test` runs
SUITE_FUZZ_EXAMPLES examples per target (default 300); `make fuzz` runs
100,000.
"""

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("SUITE_FUZZ_EXAMPLES", "300"))

fuzzed = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
