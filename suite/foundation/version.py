"""The versions an operator reports with a bug: the suite's, Twisted's and Python's."""

import platform
from importlib import metadata

import twisted


def suite_version() -> str:
    try:
        return metadata.version("suite")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def describe_versions() -> str:
    return (
        f"suite {suite_version()} (Twisted {twisted.__version__}, "
        f"Python {platform.python_version()})"
    )
