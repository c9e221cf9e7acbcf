"""
The tag filter of Consul's reads: all tags must match, case-insensitively,
at bounded cost; and the suite's logs checks as Consul's HealthCheck.
"""

from twisted.trial.unittest import SynchronousTestCase

from suite.names.consul_json import TagFilter, checks_in_state, health_entry
from suite.names.registry import MAX_TAGS, Check, Instance


class Budget:
    """Operations on instance tags counted; the test fails once more than LIMIT are done."""

    def __init__(self, limit):
        self.limit = limit
        self.spent = 0

    def spend(self):
        self.spent += 1
        if self.spent > self.limit:
            raise AssertionError(f"more than {self.limit} operations on instance tags")


class CountedTag(str):
    """An instance's tag that counts every comparison and every case fold made of it."""

    budget: Budget

    def __eq__(self, other):
        self.budget.spend()
        return str.__eq__(self, other)

    __hash__ = str.__hash__

    def lower(self):
        self.budget.spend()
        return str.lower(self)


def instances(count, tags):
    return [Instance("web", "10.0.0.1", port, tags=tuple(tags)) for port in range(1, count + 1)]


def ports(selected):
    return [instance.port for instance in selected]


class TagFilterTests(SynchronousTestCase):
    def test_every_tag_must_match(self):
        found = instances(1, ["v1", "prom"]) + [Instance("web", "10.0.0.1", 9, tags=("v1",))]
        self.assertEqual(ports(TagFilter([]).select(found)), [1, 9])
        self.assertEqual(ports(TagFilter(["v1"]).select(found)), [1, 9])
        self.assertEqual(ports(TagFilter(["v1", "prom"]).select(found)), [1])
        self.assertEqual(ports(TagFilter(["v9"]).select(found)), [])

    def test_case_does_not_count_as_consul_s_service_tag_filter(self):
        found = [Instance("web", "10.0.0.1", 1, tags=("Primary", "v1"))]
        for tags in [["primary"], ["PRIMARY", "V1"], ["pRiMaRy"]]:
            self.assertEqual(ports(TagFilter(tags).select(found)), [1], tags)

    def test_repeated_tags_count_once(self):
        self.assertEqual(TagFilter(["Prom", "prom", "PROM"] * 700).wanted, frozenset({"prom"}))

    def test_a_hostile_query_costs_each_instance_its_own_tags(self):
        """
        2,000 repeats of a tag against 1,000 instances of 64 tags: each
        instance's tags are folded once (64,000 operations), not compared
        with every tag asked (128 million).
        """
        budget = Budget(1000 * MAX_TAGS)
        CountedTag.budget = budget
        tags = [CountedTag(f"tag-{n}") for n in range(MAX_TAGS - 1)] + [CountedTag("Prom")]
        found = instances(1000, tags)
        self.assertEqual(
            len(TagFilter(["Prom"] * 1000 + ["PROM", "prom"] * 500).select(found)), 1000
        )
        self.assertEqual(budget.spent, 1000 * MAX_TAGS)

    def test_more_distinct_tags_than_an_instance_may_have_match_nothing_at_once(self):
        budget = Budget(0)
        CountedTag.budget = budget
        asked = TagFilter([f"tag-{n % (MAX_TAGS + 1)}" for n in range(2000)])
        self.assertTrue(asked.impossible)
        found = instances(1000, [CountedTag(f"tag-{n}") for n in range(MAX_TAGS)])
        self.assertEqual(asked.select(found), [])
        self.assertEqual(budget.spent, 0)
        self.assertFalse(TagFilter([f"tag-{n}" for n in range(MAX_TAGS)] * 30).impossible)


class LogsCheckTests(SynchronousTestCase):
    """A logs check is shown as any check, with the type `logs` (Go reads Type as a string)."""

    def test_a_silent_logs_check_in_its_state(self):
        silent = Check(
            "service:web-1",
            "logs",
            name="Service 'web' logs",
            status="warning",
            output="no message from web on h1 for 61 s",
            notes="access log",
            app="web",
            target="h1",
            max_silence=60.0,
        )
        heard = Check("service:web-2", "logs", status="passing", app="web", max_silence=60.0)
        web = [
            Instance("web", "10.0.0.5", 80, id="web-1", checks=[silent]),
            Instance("web", "10.0.0.6", 80, id="web-2", checks=[heard]),
        ]
        [warning] = checks_in_state(web, "warning")
        self.assertEqual(
            {k: warning[k] for k in ("CheckID", "Name", "Status", "Output", "Notes", "Type")},
            {
                "CheckID": "service:web-1",
                "Name": "Service 'web' logs",
                "Status": "warning",
                "Output": "no message from web on h1 for 61 s",
                "Notes": "access log",
                "Type": "logs",
            },
        )
        self.assertEqual((warning["ServiceID"], warning["Node"]), ("web-1", "10.0.0.5"))
        self.assertEqual([c["ServiceID"] for c in checks_in_state(web, "passing")], ["web-2"])
        self.assertEqual(checks_in_state(web, "critical"), [])
        self.assertEqual(health_entry(web[0], "dc1")["Checks"], [warning])
