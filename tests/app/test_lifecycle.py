"""The suite as a tree of named services, and what the root finds in it by interface."""

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.app import tap as services
from suite.app.announce import Announcer, AnnounceSettings
from suite.app.compose import build
from suite.app.lifecycle import NamedService, SuiteService, walk
from suite.app.status_site import MetricsSettings, metrics_site
from suite.foundation.health import health_report
from suite.foundation.interfaces import (
    IBatchedDatagramProtocol,
    IHealthSource,
    IMetricSource,
    IReopenable,
    IStopsFirst,
)
from suite.foundation.jsonlines import BatchWriter, StandardOutput
from suite.net.http_site import LimitedSite, QuietSite
from suite.net.interfaces import IRefusesAtDescriptorLimit
from suite.net.listeners import ListenerService
from tests.helpers import make_pki, start_suite, tls_section, tmp_dir

INTERFACES = (
    IMetricSource,
    IHealthSource,
    IStopsFirst,
    IReopenable,
    IBatchedDatagramProtocol,
    IRefusesAtDescriptorLimit,
)
LOCAL = "tcp:0:interface=127.0.0.1"
UDP = "udp:0:interface=127.0.0.1"


@implementer(IMetricSource, IHealthSource)
class Factory:
    def metric_samples(self):
        yield "connections", ("tcp",), 3

    def health_problems(self):
        return [("degraded", "tired")]


@implementer(IReopenable)
class Reopens(service.Service):
    reopened = 0

    def reopen(self):
        self.reopened += 1


@implementer(IStopsFirst)
class StopsFirst(service.Service):
    def __init__(self):
        self.stopping = defer.Deferred()

    def stopService(self):
        service.Service.stopService(self)
        return self.stopping


class ProvidersTests(SynchronousTestCase):
    """Every provider of the application's files keeps its interfaces' promises."""

    def test_batch_writer(self):
        writer = BatchWriter(StandardOutput(), Clock(), 0.2, 100)
        for interface in (IReopenable, IMetricSource, IHealthSource):
            self.assertTrue(verifyObject(interface, writer))

    def test_announcer(self):
        announcer = Announcer(AnnounceSettings(), None, [], Clock(), {})
        self.assertTrue(verifyObject(IStopsFirst, announcer))

    def test_named_service(self):
        named = NamedService("echo", [Factory(), object()])
        self.assertTrue(verifyObject(IMetricSource, named))
        self.assertTrue(verifyObject(IHealthSource, named))
        self.assertEqual(list(named.metric_samples()), [("connections", ("tcp",), 3)])
        self.assertEqual(named.health_problems(), [("degraded", "tired")])

    def test_the_metrics_site(self):
        site = metrics_site(SuiteService(MemoryReactor()), MetricsSettings(), MemoryReactor())
        self.assertIsInstance(site, LimitedSite)
        self.assertIsInstance(site.site, QuietSite)
        self.assertTrue(verifyObject(IMetricSource, site))


class TreeTests(SynchronousTestCase):
    def test_each_service_is_named_under_the_root_and_holds_its_parts(self):
        directory = tmp_dir(self)
        path = directory / "suite.toml"
        path.write_text(
            f'[logger]\nlisten = ["tcp:5140", "udp:5140"]\noutput = "{directory}/out.jsonl"\n'
            '[echo]\nlisten = ["tcp:7"]\n[metrics]\nlisten = ["tcp:9100"]\n'
            '[announce]\nname_server = ["127.0.0.1:5300"]\n'
        )
        root = build(services.SERVICES, str(path), {}, MemoryReactor(), only_listed=False)
        self.assertEqual(
            [child.name for child in root], ["echo", "logger", "metrics", None, "status page"]
        )
        logger = root.getServiceNamed("logger")
        self.assertIsInstance(logger, NamedService)
        self.assertEqual(
            [child.name for child in logger if isinstance(child, ListenerService)],
            ["logger tcp:5140", "logger udp:5140"],
        )
        self.assertEqual(len([child for child in logger if isinstance(child, BatchWriter)]), 1)
        self.assertEqual(
            [type(f).__name__ for f in logger.factories], ["SyslogFactory", "RelpFactory"]
        )
        (site,) = root.getServiceNamed("metrics").factories
        self.assertIsInstance(site, LimitedSite)
        self.assertEqual(
            {name for name, _ in root.parts()},
            {"echo", "logger", "metrics"},
            "the announcer is not a service /health and /metrics report",
        )
        self.assertEqual(
            set(health_report(root.parts())["services"]), {"echo", "logger", "metrics"}
        )

    def test_sighup_reopens_what_provides_ireopenable_anywhere_in_the_tree(self):
        root = SuiteService(MemoryReactor())
        named = NamedService("logger", [])
        named.setServiceParent(root)
        nested, top = Reopens(), Reopens()
        nested.setServiceParent(named)
        top.setServiceParent(root)
        root.reload()
        self.assertEqual((nested.reopened, top.reopened), (1, 1))

    def test_what_stops_first_is_waited_for_before_the_others_stop(self):
        root = SuiteService(MemoryReactor())
        named = NamedService("echo", [])
        named.setServiceParent(root)
        other = service.Service()
        other.setServiceParent(named)
        first = StopsFirst()
        first.setServiceParent(named)
        root.startService()
        stopped = root.stopService()
        self.assertFalse(first.running)
        self.assertTrue(other.running)
        first.stopping.callback(None)
        self.assertFalse(other.running)
        self.successResultOf(stopped)


class BuiltSuiteTests(TestCase):
    def test_every_provider_found_in_a_running_suite_keeps_its_promises(self):
        """
        The tree walked as the collector, /health, SIGHUP and shutdown walk
        it, with each named service's factories and each bound datagram
        port's protocol: every object providing one of the interfaces passes
        verifyObject for it.
        """
        directory = tmp_dir(self)
        pki = make_pki(directory)
        start_suite(
            self,
            directory,
            tls_section(pki)
            + f"""
            [timestamp]
            listen = ["{LOCAL}", "{UDP}"]
            [echo]
            listen = ["{LOCAL}", "{UDP}"]
            tls_listen = ["{LOCAL}"]
            [logger]
            listen = ["{LOCAL}", "{UDP}"]
            output = "{directory}/messages.jsonl"
            [sleep]
            listen = ["{LOCAL}"]
            [names]
            listen = ["{LOCAL}"]
            dns_listen = ["{UDP}", "{LOCAL}"]
            store = "memory"
            lookup_audit = "{directory}/lookups.jsonl"
            [metrics]
            listen = ["{LOCAL}"]
        """,
        )
        found = []
        for part in walk(self.suite_root.root):
            found.append(part)
            if isinstance(part, NamedService):
                found += part.factories
            port = getattr(part, "port", None)
            if isinstance(part, ListenerService) and part.listener.datagram and port is not None:
                found.append(port.protocol)
        checked = set()
        for part in found:
            for interface in INTERFACES:
                if interface.providedBy(part):
                    self.assertTrue(verifyObject(interface, part), (interface, part))
                    checked.add((interface.__name__, type(part).__name__))
        for expected in [
            ("IReopenable", "BatchWriter"),
            ("IHealthSource", "BatchWriter"),
            ("IMetricSource", "NamedService"),
            ("IHealthSource", "ListenerService"),
            ("IMetricSource", "LimitedSite"),
            ("IMetricSource", "SyslogFactory"),
            ("IMetricSource", "RateLimitedReplier"),
            ("IMetricSource", "SyslogDatagramProtocol"),
            ("IMetricSource", "NameServer"),
            ("IHealthSource", "NameServer"),
            ("IMetricSource", "HealthChecker"),
            ("IMetricSource", "DNSFactory"),
        ]:
            self.assertIn(expected, checked)
