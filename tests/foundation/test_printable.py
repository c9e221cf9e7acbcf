"""Client-supplied text is printed on one line, with nothing a terminal would obey."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from suite.foundation.printable import printable


class PrintableTests(SynchronousTestCase):
    def test_plain_text_is_unchanged(self):
        text = "echo@10.0.0.5:5001 café ☃"
        self.assertIs(printable(text), text)

    def test_controls_escape_del_c1_and_bidi_are_spelled_out(self):
        hostile = "a\nb\r\x1b[2J\x7f\x85\u202eevil\u2066\t\\"
        self.assertEqual(printable(hostile), "a\\nb\\r\\x1b[2J\\x7f\\x85\\u202eevil\\u2066\\t\\\\")

    @given(st.text())
    def test_output_is_one_printable_line(self, text):
        shown = printable(text)
        self.assertTrue(shown.isprintable())
        self.assertLessEqual(len(shown), 10 * len(text))
