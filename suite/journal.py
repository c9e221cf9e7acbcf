"""
The log observers operators name on twistd's command line (kept in
suite.runtime.journal, which older units name):

- `--logger=suite.journal.observer`: journald lines with priorities;
- `--logger=suite.journal.json_observer`: one JSON object per line.
"""

from suite.runtime.journal import json_observer, observer

__all__ = ["json_observer", "observer"]
