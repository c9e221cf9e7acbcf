"""
UTC timestamps for JSON records (`2026-11-21T12:00:00.250000Z`), cheap
enough for one per message: the date and time of day are formatted once
per second, and only the microseconds per call.
"""

import time

_second = -1
_prefix = ""


def utc_stamp(seconds: float) -> str:
    """What `datetime.fromtimestamp(SECONDS, utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")` gives."""
    global _second, _prefix
    whole = int(seconds)
    micro = round((seconds - whole) * 1e6)  # rounded half to even, as datetime does
    if micro == 1000000:
        whole, micro = whole + 1, 0
    if whole != _second:
        _second, _prefix = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_prefix}.{micro:06d}Z"


def utc_second(seconds: float) -> str:
    """SECONDS to the second (`2026-11-21T12:00:00Z`): since when an outage lasts, for /health."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
