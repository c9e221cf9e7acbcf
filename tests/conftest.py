"""Run every test from a scratch directory, so nothing a test writes lands in the checkout."""

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def scratch_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)
