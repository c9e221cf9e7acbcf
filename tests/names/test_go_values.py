"""Go's spellings of durations and booleans, as Consul's clients send them."""

from twisted.trial.unittest import SynchronousTestCase

from suite.names.go_values import parse_bool, parse_duration


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


class BoolTests(SynchronousTestCase):
    def test_strconv_parse_bool(self):
        for text in ["1", "t", "T", "TRUE", "true", "True"]:
            self.assertIs(parse_bool(text), True)
        for text in ["0", "f", "F", "FALSE", "false", "False"]:
            self.assertIs(parse_bool(text), False)
        for text in ["", "yes", "tRUE", "2", " true"]:
            with self.assertRaisesRegex(ValueError, "invalid syntax"):
                parse_bool(text)
