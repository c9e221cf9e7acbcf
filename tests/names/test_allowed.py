"""Resolving a registration's host name: through the reactor's resolver, bounded in time."""

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from suite.contracts.names import Invalid
from suite.foundation.config import ConfigError, settings_for
from suite.names.allowed import RESOLVE_TIMEOUT, host_resolver
from suite.names.service import NamesSettings


class SilentResolver:
    """An IHostnameResolver whose resolutions finish only when told (a DNS server that hangs)."""

    def __init__(self):
        self.receivers = []

    def resolveHostName(self, receiver, name, port=0, types=None, semantics="TCP"):
        receiver.resolutionBegan(None)
        self.receivers.append(receiver)


class ResolverTests(SynchronousTestCase):
    def test_a_resolution_that_hangs_is_invalid_after_the_timeout(self):
        clock = Clock()
        clock.nameResolver = SilentResolver()
        answers = []
        host_resolver(clock)("slow.example").addBoth(answers.append)
        clock.advance(RESOLVE_TIMEOUT - 0.1)
        self.assertEqual(answers, [])
        clock.advance(0.1)
        answers[0].trap(Invalid)
        self.assertIn("not resolved within 5 s", answers[0].getErrorMessage())
        clock.nameResolver.receivers[0].resolutionComplete()  # too late: ignored, nothing raised

    def test_a_name_with_no_address_is_invalid(self):
        clock = Clock()
        clock.nameResolver = SilentResolver()
        answers = []
        host_resolver(clock)("nothing.example").addBoth(answers.append)
        clock.nameResolver.receivers[0].resolutionComplete()
        answers[0].trap(Invalid)
        self.assertIn("host name not found", answers[0].getErrorMessage())


class RealResolverTests(TestCase):
    async def test_localhost_resolves_off_the_reactor_thread(self):
        addresses = await host_resolver(reactor)("localhost")
        self.assertIn("127.0.0.1", addresses)


class ConfigTests(SynchronousTestCase):
    def test_allowed_networks_and_max_instances_per_source_are_checked(self):
        settings = settings_for(
            NamesSettings,
            {"allowed_networks": ["10.0.0.0/8", "fd00::/8"], "max_instances_per_source": 5},
            "suite.toml",
        )
        self.assertEqual(
            (settings.allowed_networks, settings.max_instances_per_source),
            (("10.0.0.0/8", "fd00::/8"), 5),
        )
        for bad in (["10.0.0.1/8"], ["not a network"], "10.0.0.0/8"):
            with self.assertRaises(ConfigError, msg=repr(bad)):
                settings_for(NamesSettings, {"allowed_networks": bad}, "suite.toml")
        with self.assertRaises(ConfigError):
            settings_for(NamesSettings, {"max_instances_per_source": 0}, "suite.toml")
