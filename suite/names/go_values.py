"""
Values as Go spells them, since Consul's clients are written against Go's
parsers: a duration is what `time.ParseDuration` takes (`"10s"`,
`"1m30s"`, `"120000ms"`, `"1.5h"`), a boolean what `strconv.ParseBool`
takes.  Both parsers here accept exactly those spellings and nothing more,
so a value Consul refuses is refused here too.
"""

import re

# One number-unit pair of a Go duration; Go takes both the micro sign
# (U+00B5) and the Greek mu (U+03BC) for microseconds.
_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
MAX_NANOSECONDS = 2**63 - 1  # a Go duration is an int64 of nanoseconds
MAX_DURATION = MAX_NANOSECONDS * 1e-9
MAX_DURATION_TEXT = 64  # characters; any duration Go can hold is far shorter
TRUE = ("1", "t", "T", "TRUE", "true", "True")
FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_duration(text: str) -> float:
    """
    The seconds of the Go duration TEXT (a sign, then number-unit pairs,
    or a bare "0"); ValueError naming TEXT as Go's error would.
    """
    problem = ValueError(f'time: invalid duration "{text[:MAX_DURATION_TEXT]}"')
    if len(text) > MAX_DURATION_TEXT:
        raise problem
    sign, rest = 1.0, text
    if rest[:1] in ("-", "+"):
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise problem
    seconds, position = 0.0, 0
    while position < len(rest):
        part = _PART.match(rest, position)
        if part is None or not (part[1] or part[2]):
            raise problem
        whole, fraction, unit = part[1] or "0", part[2] or "", part[3]
        seconds += float(f"{whole}.{fraction or '0'}") * _UNIT[unit]
        position = part.end()
    if seconds > MAX_DURATION:
        raise problem
    return sign * seconds


def duration_of_nanoseconds(value: int | float) -> float:
    """
    The seconds of VALUE nanoseconds, a number as JSON gives a duration
    (Python's JSON decoder takes at most 4,300 digits); ValueError, as
    parse_duration's, beyond what an int64 holds, NaN included.
    """
    if not -MAX_NANOSECONDS <= value <= MAX_NANOSECONDS:
        raise ValueError(f'time: invalid duration "{str(value)[:MAX_DURATION_TEXT]}"')
    return value / 1e9  # exact for whole seconds (1e-9 is not a float exactly)


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool: 1 t T TRUE true True, 0 f F FALSE false False; else ValueError."""
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text[:MAX_DURATION_TEXT]}": invalid syntax')
