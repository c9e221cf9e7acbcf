"""suite-client's ADDRESS forms."""

from twisted.trial.unittest import SynchronousTestCase

from suite.net.client_endpoints import Address, parse_address


class AddressTests(SynchronousTestCase):
    def test_forms(self):
        for text, host, port, hostname in [
            ("127.0.0.1:5200", "127.0.0.1", 5200, "127.0.0.1"),
            ("localhost:1", "localhost", 1, "localhost"),
            ("[::1]:5001", "::1", 5001, "::1"),
            ("tcp:host=example.org:port=5200", None, None, "example.org"),
            ("unix:path=/run/suite.sock", None, None, None),
        ]:
            address = parse_address(text)
            self.assertEqual(
                (address.host, address.port, address.hostname), (host, port, hostname)
            )
            self.assertEqual(address.text, text)

    def test_refused(self):
        for text, problem in [
            ("localhost", "expected host:port, [v6]:port or an endpoint string"),
            ("localhost:0", "port must be 1-65535"),
            ("localhost:70000", "port must be 1-65535"),
        ]:
            caught = self.assertRaises(ValueError, parse_address, text)
            self.assertEqual(str(caught), f"{text}: {problem}")

    def test_address_is_a_value(self):
        self.assertEqual(parse_address("a:1"), Address("a:1", "a", 1))
