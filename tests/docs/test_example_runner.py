"""
The docs example runner reads blocks and masks output as its docstring says:
a mask that hid too much would let a wrong example pass.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.docs.test_examples import DEFAULT_CONFIG, normalise, parse, replace_ports

DOCUMENT = """# Title

## Echo

**line mode** first.

```console
$ printf 'a\\n' | nc 127.0.0.1 5001
You said: a
$ suite-client sleep 127.0.0.1:5200 \\
      1.5
1.500911
```

```sh
# not a heading, and no example
$ not a command
```

<!-- example: skip: needs other hosts -->
```console
$ dig @10.0.0.3 -p 5354 x.suite
```

<!-- example: config=etc/examples/other.toml -->

```console
$ suite-client names 127.0.0.1:5300 watch web
web: 127.0.0.1:5001
^C
suite-client: interrupted
```
"""


class ParseTests(SynchronousTestCase):
    def test_commands_output_and_continuations(self):
        first = parse("doc.md", DOCUMENT)[0]
        self.assertEqual(first.heading, "Echo line mode")
        self.assertEqual(first.line, 7)
        self.assertEqual(first.config, DEFAULT_CONFIG)
        self.assertEqual(
            [(c.text, c.expected) for c in first.commands],
            [
                ("printf 'a\\n' | nc 127.0.0.1 5001", ["You said: a"]),
                ("suite-client sleep 127.0.0.1:5200 \\\n      1.5", ["1.500911"]),
            ],
        )

    def test_directives_apply_to_the_next_block_only(self):
        blocks = parse("doc.md", DOCUMENT)
        self.assertEqual(len(blocks), 3, "the sh block is no example")
        self.assertEqual(blocks[1].skip, "needs other hosts")
        self.assertEqual(blocks[2].config, "etc/examples/other.toml")
        self.assertEqual(blocks[2].skip, "")
        self.assertEqual(blocks[2].commands[0].expected[1], "^C")

    def test_unknown_directive_and_stray_output_are_refused(self):
        with self.assertRaises(ValueError):
            parse("doc.md", "<!-- example: sometimes -->\n```console\n$ true\n```\n")
        with self.assertRaises(ValueError):
            parse("doc.md", "```console\noutput first\n```\n")


class NormaliseTests(SynchronousTestCase):
    def test_what_differs_between_runs_is_masked(self):
        self.assertEqual(
            normalise(
                [
                    "[Thu Dec  3 10:28:56 2026] hello",
                    '{"received": "2026-12-03T10:35:35.035151Z", "peer": "127.0.0.1:53610"}',
                    '"timestamp": "Dec  3 10:35:35", "hostname": "vm"',
                    "1.500911",
                    "suite 0.1.0 (Twisted 26.10.0, Python 3.11.7): ok",
                    "",
                ]
            ),
            normalise(
                [
                    "[Fri Nov 20 23:08:46 2026] hello",
                    '{"received": "2026-11-20T23:16:05.809507Z", "peer": "127.0.0.1:39807"}',
                    '"timestamp": "Nov 20 23:16:05", "hostname": "myhost"',
                    "1.501679",
                    "suite 0.2.0 (Twisted 26.4.0, Python 3.13.0): ok",
                ]
            ),
        )

    def test_what_an_example_shows_is_kept(self):
        for shown, printed in [
            ("You said: hello", "You said: hullo"),
            ("127.0.0.1:5001\ttcp", "127.0.0.1:5999\ttcp"),
            ("suite_requests_total 2.0", "suite_requests_total 3.0"),
            ("1 1 5001 7f000001.addr.suite.", "1 1 5001 7f000002.addr.suite."),
        ]:
            self.assertNotEqual(normalise([shown]), normalise([printed]))

    def test_the_scratch_directory_reads_as_the_documented_checkout(self):
        self.assertEqual(
            normalise(["wrote /tmp/suite-docs-x1/mysuite/tls/server.key"], "/tmp/suite-docs-x1"),
            normalise(["wrote /home/you/suite/mysuite/tls/server.key"]),
        )


class PortTests(SynchronousTestCase):
    def test_only_whole_port_numbers_move(self):
        mapping = {5001: 41234, 5300: 45678}
        self.assertEqual(
            replace_ports("nc 127.0.0.1 5001; nc -u 25001; tcp:5300:x; 15001 5001.5", mapping),
            "nc 127.0.0.1 41234; nc -u 25001; tcp:45678:x; 15001 5001.5",
        )
