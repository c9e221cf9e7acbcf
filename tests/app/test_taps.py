"""Every twistd plugin the suite ships: found by twistd, and each starts its own named service."""

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from suite.echo import tap as echo_tap
from suite.logger import tap as logger_tap
from suite.names import tap as names_tap
from suite.sleep import tap as sleep_tap
from suite.timestamp import tap as timestamp_tap

TAPS = {
    "timestamp": (timestamp_tap, []),
    "echo": (echo_tap, []),
    "logger": (logger_tap, ["--output", "-"]),
    "sleep": (sleep_tap, []),
    "names": (names_tap, ["--store", "memory"]),
}


class TapTests(SynchronousTestCase):
    def test_each_plugin_names_its_tap(self):
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        for name in TAPS:
            self.assertEqual(makers[f"suite-{name}"].module, f"suite.{name}.tap")
        self.assertEqual(makers["suite"].module, "suite.app.tap")

    def test_each_tap_starts_its_service_under_its_name(self):
        for name, (tap, argv) in TAPS.items():
            options = tap.Options()
            options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *argv])
            root = tap.makeService(options, MemoryReactor())
            self.assertEqual([service.name for service in root], [name])
            self.assertIs(root.getServiceNamed(name).parent, root)


class EarlierLoggerNameTests(SynchronousTestCase):
    def test_units_naming_suite_runtime_journal_keep_working(self):
        """`--logger=suite.runtime.journal.observer`, as units of earlier versions say."""
        from suite import journal
        from suite.runtime import journal as earlier

        self.assertIs(earlier.observer, journal.observer)
        self.assertIs(earlier.json_observer, journal.json_observer)
