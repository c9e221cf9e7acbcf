"""The AMP contracts share one Overloaded: a client catches it the same way from every service."""

from twisted.trial.unittest import SynchronousTestCase

from suite.contracts.errors import Overloaded
from suite.contracts.names import Deregister, Lookup, Register, Services, Unwatch, Watch
from suite.contracts.sleep import Sleep


class OverloadedTests(SynchronousTestCase):
    def test_every_command_answers_overloaded_with_the_one_class(self):
        for command in (Sleep, Register, Deregister, Lookup, Services, Watch, Unwatch):
            self.assertEqual(command.errors[Overloaded], b"OVERLOADED")
