"""
The shipped Prometheus alerting rules (etc/prometheus/suite.rules.yml) load
in Prometheus and fire as their unit tests say, both checked by promtool
(Debian's `prometheus` package ships it); and every suite_* metric and label
they name is one the suite exports, so renaming a metric fails here instead
of leaving an alert that can never fire.
"""

import re
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from suite.foundation.interfaces import IMetricSource
from suite.foundation.metrics import HISTOGRAM, METRICS, Histogram, SuiteCollector
from tests.e2e.process import require

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "etc" / "prometheus" / "suite.rules.yml"
RULES_TESTS = ROOT / "etc" / "prometheus" / "suite.rules.test.yml"
SCRAPE_LABELS = {"instance", "job"}  # what Prometheus adds to every scraped series

METRIC_NAME = re.compile(r"\bsuite_[a-z_]+")
SELECTOR = re.compile(r"\b(suite_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")


def promtool(*arguments: str) -> str:
    """Run promtool with ARGUMENTS; fail with what it said unless it succeeds."""
    require("promtool")
    done = subprocess.run(["promtool", *arguments], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def exported() -> dict[str, set[str]]:
    """
    Every sample name /metrics can show (`_total` for counters, `_bucket`
    and friends for histograms, as prometheus_client spells them), with
    the label names it carries.
    """

    @implementer(IMetricSource)
    class EveryMetric:
        def metric_samples(self):
            for name, metric in METRICS.items():
                value = Histogram() if metric.kind is HISTOGRAM else 1
                yield name, tuple("x" for _ in metric.labels), value

    registry = CollectorRegistry()
    registry.register(SuiteCollector(lambda: [("service", EveryMetric())]))
    text = generate_latest(registry).decode()
    return {
        sample.name: set(sample.labels) - {"le"}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def alerts(text: str) -> list[str]:
    """The rules of TEXT (a rules file), each as its lines, comments left out."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return re.split(r"^\s*- alert: ", "\n".join(lines), flags=re.M)[1:]


def unknown_metrics(text: str, names: dict[str, set[str]]) -> set[str]:
    """The suite_* names the rules of TEXT use that are not among NAMES."""
    return set(METRIC_NAME.findall("\n".join(alerts(text)))) - set(names)


def unknown_labels(text: str, names: dict[str, set[str]]) -> dict[str, set[str]]:
    """
    By alert, the label names its selectors, groupings and annotations use
    that none of its metrics (in NAMES) carries, nor the scrape adds.
    """
    unknown = {}
    for rule in alerts(text):
        known = set(SCRAPE_LABELS)
        for name in METRIC_NAME.findall(rule):
            known |= names.get(name, set())
        used = {label for _, within in SELECTOR.findall(rule) for label in MATCHER.findall(within)}
        used |= {label.strip() for group in GROUPING.findall(rule) for label in group.split(",")}
        used |= set(TEMPLATE_LABEL.findall(rule))
        if used - known:
            unknown[rule.split(maxsplit=1)[0]] = used - known
    return unknown


class PromtoolTests(SynchronousTestCase):
    def test_the_rules_load(self):
        self.assertIn("SUCCESS", promtool("check", "rules", str(RULES)))

    def test_the_alerts_fire_as_their_unit_tests_say(self):
        self.assertIn("SUCCESS", promtool("test", "rules", str(RULES_TESTS)))


class NamesTests(SynchronousTestCase):
    def test_every_metric_the_rules_name_is_exported(self):
        names = exported()
        self.assertEqual(unknown_metrics(RULES.read_text(), names), set())
        self.assertIn("suite_forward_dropped_total", METRIC_NAME.findall(RULES.read_text()))

    def test_every_label_an_alert_uses_is_one_of_its_metrics(self):
        self.assertEqual(unknown_labels(RULES.read_text(), exported()), {})

    def test_a_renamed_metric_or_label_is_noticed(self):
        """What the two tests above would say if the metrics were renamed under the rules."""
        names = exported()
        text = RULES.read_text()
        self.assertEqual(
            unknown_metrics(text.replace("suite_write_errors_total", "suite_write_errors"), names),
            {"suite_write_errors"},
        )
        self.assertEqual(
            unknown_labels(text.replace("without (place)", "without (where)"), names),
            {"SuiteForwardQueueGrowing": {"where"}},
        )
        self.assertEqual(
            unknown_labels(text.replace("$labels.target", "$labels.destination"), names),
            {
                name: {"destination"}
                for name in (
                    "SuiteForwardQueueGrowing",
                    "SuiteForwardTargetDown",
                    "SuiteForwardDropping",
                )
            },
        )
