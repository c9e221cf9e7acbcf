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


@pytest.fixture(scope="session", autouse=True)
def stop_the_reactors_thread_pool() -> Iterator[None]:
    """
    A test connecting through `HostnameEndpoint` on the global reactor (the
    forwarders do) starts the reactor's thread pool to resolve the name, an
    IP address included.  Under pytest the reactor never shuts down, which is
    what stops that pool, and its threads are not daemons: the process would
    wait for them forever after the last test.
    """
    yield
    from twisted.internet import reactor

    pool = getattr(reactor, "threadpool", None)
    if pool is not None:
        pool.stop()
