"""
Every twistd plugin the suite ships: found by twistd, each starts its own
named service, and its --help lists every key it takes.
"""

import re

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from suite.app import tap as suite_tap
from suite.echo import tap as echo_tap
from suite.foundation.options import describe_default
from suite.logger import tap as logger_tap
from suite.names import tap as names_tap
from suite.net.tls import TLSSettings
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
            # The name server's HTTP API shows the status page, which the root holds.
            page = ["status page"] if name == "names" else []
            self.assertEqual([service.name for service in root], [name, *page])
            self.assertIs(root.getServiceNamed(name).parent, root)


SECTIONS = {declaration.name: declaration.settings for declaration in suite_tap.SERVICES}
# The first line of an option's entry in usage.Options' help: "  -c, --config=  TEXT".
OPTION_ENTRY = re.compile(r"^ {2}(?:-\w, )? *--([a-z0-9-]+)=? ")


def help_entries(help_text):
    """
    Each option's entry in a plugin's --help, by option name, with every
    space and line break removed: the help wraps long defaults anywhere,
    even after a hyphen inside one.
    """
    entries = {}
    option = None
    for line in help_text.splitlines():
        found = OPTION_ENTRY.match(line)
        if found:
            option = found.group(1)
            entries[option] = ""
        elif not line.strip():
            option = None
        if option is not None:
            entries[option] += "".join(line.split())
    return entries


class HelpTests(SynchronousTestCase):
    """`twistd suite-NAME --help` is the reference of that plugin's keys."""

    def test_each_plugin_lists_every_key_of_its_section_and_tls_with_its_default(self):
        for name, (tap, _) in TAPS.items():
            entries = help_entries(str(tap.Options()))
            settings = SECTIONS[name]
            for key in [*settings.keys(), *TLSSettings.keys()]:
                if key.name == "enabled" or key.kind.table is not None:
                    continue  # tables ([[logger.forward]]) are written in the config file only
                where = f"suite-{name} --{key.option}"
                self.assertIn(key.option, entries, where)
                repeatable = " (repeatable)" if key.kind.repeatable else ""
                described = f"{key.help}{repeatable} [default: {describe_default(key.default)}]"
                self.assertIn("".join(described.split()), entries[key.option], where)

    def test_enabled_is_no_option_of_a_plugin_that_runs_one_service(self):
        """Running suite-echo asks for echo: there is nothing for `enabled` to turn off."""
        for _, (tap, _) in TAPS.items():
            self.assertNotIn("enabled", help_entries(str(tap.Options())))

    def test_the_suite_plugin_takes_its_config_file_and_the_workers(self):
        entries = help_entries(str(suite_tap.Options()))
        self.assertEqual(sorted(entries), ["config", "help", "version", "workers"])
        self.assertIn("[default:etc/suite.toml]", entries["config"])


class EarlierLoggerNameTests(SynchronousTestCase):
    def test_units_naming_suite_runtime_journal_keep_working(self):
        """`--logger=suite.runtime.journal.observer`, as units of earlier versions say."""
        from suite import journal
        from suite.runtime import journal as earlier

        self.assertIs(earlier.observer, journal.observer)
        self.assertIs(earlier.json_observer, journal.json_observer)
