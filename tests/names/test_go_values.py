"""Go's spellings of durations and booleans, as Consul's clients send them."""

from twisted.trial.unittest import SynchronousTestCase

from suite.names.go_values import duration_of_nanoseconds, parse_bool, parse_duration


class DurationTests(SynchronousTestCase):
    def test_what_go_takes(self):
        for text, seconds in [
            ("0", 0.0),
            ("10s", 10.0),
            ("1m30s", 90.0),
            ("120000ms", 120.0),
            ("1.5h", 5400.0),
            (".5s", 0.5),
            ("5.s", 5.0),
            ("250us", 250e-6),
            ("250\u00b5s", 250e-6),
            ("250\u03bcs", 250e-6),
            ("100ns", 100e-9),
            ("-2s", -2.0),
            ("+2s", 2.0),
            ("1h1m1s", 3661.0),
        ]:
            self.assertAlmostEqual(parse_duration(text), seconds, msg=text)

    def test_what_go_refuses(self):
        for text in ["", "1", "s", ".s", "1x", "1h2", "-", "1 s", " 1s", "1s ", "1e3s", "9" * 80]:
            with self.assertRaises(ValueError, msg=repr(text)) as caught:
                parse_duration(text)
            self.assertTrue(str(caught.exception).startswith("time: invalid duration"))

    def test_beyond_an_int64_of_nanoseconds(self):
        self.assertAlmostEqual(parse_duration("2562047h"), 2562047 * 3600.0)
        with self.assertRaises(ValueError):
            parse_duration("2562048h")


class NanosecondsTests(SynchronousTestCase):
    def test_what_an_int64_holds(self):
        self.assertEqual(duration_of_nanoseconds(1_500_000_000), 1.5)
        self.assertEqual(duration_of_nanoseconds(-(10**9)), -1.0)
        for seconds in (60, 90, 3600, 86400):  # exact: 60 * 10**9 is 60.0, not 60.00000000000001
            self.assertEqual(duration_of_nanoseconds(seconds * 10**9), float(seconds))
        self.assertAlmostEqual(duration_of_nanoseconds(2.5e9), 2.5)
        self.assertAlmostEqual(duration_of_nanoseconds(2**63 - 1), (2**63 - 1) * 1e-9)

    def test_beyond_is_go_s_error_not_an_overflow(self):
        """10**400 nanoseconds overflow a float: refused as a duration, before any arithmetic."""
        for value in [2**63, -(2**63), 10**400, -(10**4000), float("nan"), float("inf"), 1e300]:
            with self.assertRaises(ValueError, msg=repr(value)[:20]) as caught:
                duration_of_nanoseconds(value)
            self.assertTrue(str(caught.exception).startswith('time: invalid duration "'))
            self.assertLess(len(str(caught.exception)), 100)


class BoolTests(SynchronousTestCase):
    def test_strconv_parse_bool(self):
        for text in ["1", "t", "T", "TRUE", "true", "True"]:
            self.assertIs(parse_bool(text), True)
        for text in ["0", "f", "F", "FALSE", "false", "False"]:
            self.assertIs(parse_bool(text), False)
        for text in ["", "yes", "tRUE", "2", " true"]:
            with self.assertRaisesRegex(ValueError, "invalid syntax"):
                parse_bool(text)
