"""The collector's malloc tuning: taken by glibc, asked for by every process the logger runs in."""

import platform

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase

from suite.foundation import allocator
from suite.logger import service
from suite.logger.service import LoggerSettings
from tests.helpers import tmp_dir


class KeepFreedMemoryTests(SynchronousTestCase):
    def test_glibc_takes_the_thresholds(self):
        if platform.libc_ver()[0] != "glibc":
            self.skipTest("not glibc: nothing to tune")
        self.patch(allocator, "_kept", False)
        self.assertTrue(allocator.keep_freed_memory())
        self.assertTrue(allocator.keep_freed_memory())

    def test_the_logger_asks_for_it_in_one_process_and_in_the_parent(self):
        calls = []
        self.patch(service, "keep_freed_memory", lambda: calls.append(1))
        settings = LoggerSettings(output=str(tmp_dir(self) / "out.jsonl"), listen=())
        service.build(settings, reactor)
        self.assertEqual(len(calls), 1)
        service.build_shared(settings, reactor)
        self.assertEqual(len(calls), 2)
