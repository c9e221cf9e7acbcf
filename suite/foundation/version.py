"""The versions an operator reports with a bug: the suite's, Twisted's and Python's."""

import platform
from importlib import metadata

import twisted


def describe_versions() -> str:
    try:
        suite = metadata.version("suite")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        suite = "unknown"
    return f"suite {suite} (Twisted {twisted.__version__}, Python {platform.python_version()})"
