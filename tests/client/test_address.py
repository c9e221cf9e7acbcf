import re

import pytest

from suite.client.address import Address, parse_address


@pytest.mark.parametrize(
    "text, host, port, hostname",
    [
        ("127.0.0.1:5200", "127.0.0.1", 5200, "127.0.0.1"),
        ("localhost:1", "localhost", 1, "localhost"),
        ("[::1]:5001", "::1", 5001, "::1"),
        ("tcp:host=example.org:port=5200", None, None, "example.org"),
        ("unix:path=/run/suite.sock", None, None, None),
    ],
)
def test_forms(text, host, port, hostname):
    address = parse_address(text)
    assert (address.host, address.port, address.hostname) == (host, port, hostname)
    assert address.text == text


@pytest.mark.parametrize(
    "text, problem",
    [
        ("localhost", "expected host:port, [v6]:port or an endpoint string"),
        ("localhost:0", "port must be 1-65535"),
        ("localhost:70000", "port must be 1-65535"),
    ],
)
def test_refused(text, problem):
    with pytest.raises(ValueError, match=re.escape(f"{text}: {problem}")):
        parse_address(text)


def test_address_is_a_value():
    assert parse_address("a:1") == Address("a:1", "a", 1)
