"""The journald and JSON log observers under their earlier name; see L{suite.journal}."""

from suite.journal import json_observer, observer

__all__ = ["json_observer", "observer"]
