"""
`suite-client`: one command for every service (SPEC §5).  Exit status 0 on
success; otherwise 1 and one line on standard error, never a traceback.
"""

import argparse
import os
import sys

from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.endpoints import connectProtocol
from twisted.internet.stdio import StandardIO
from twisted.protocols import amp
from twisted.protocols.basic import LineReceiver

from suite.client.address import client_tls, parse_address, stream_endpoint
from suite.client.api import (
    DatagramExchange,
    LineExchange,
    ServerClosed,
    SyslogSender,
    open_datagram,
    syslog_message,
)
from suite.commands import Sleep

STDIN_MAX_LINE = 2**20


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and status 1, like every other failure."""

    def error(self, message):
        self.exit(1, f"{self.prog}: {message} (see --help)\n")


SUMMARIES = {
    "timestamp": "send lines, print the '[time] line' answers",
    "echo": "send lines, print what comes back",
    "log": "send syslog messages (RFC 5424; octet-counted over streams)",
    "sleep": "ask the sleep service to sleep SECONDS; print the seconds it measured",
}


def service_parser(service: str) -> Parser:
    """The options of one service (messages and options may be given in any order)."""
    parser = Parser(prog=f"suite-client {service}", description=SUMMARIES[service])
    parser.add_argument("address", metavar="ADDRESS",
                        help="host:port, [v6]:port or a Twisted client endpoint string")
    if service == "sleep":
        parser.add_argument("seconds", metavar="SECONDS", type=float)
    else:
        parser.add_argument("messages", metavar="MESSAGE", nargs="*",
                            help="one line each; none: lines from standard input")
        parser.add_argument("--udp", action="store_true", help="use UDP")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to connect, and to wait for answers once sent (default 10)")
    parser.add_argument("--tls", action="store_true", help="TLS, verifying certificate and host")
    parser.add_argument("--ca", metavar="FILE", help="CA certificate to verify the server with")
    parser.add_argument("--cert", metavar="FILE", help="client certificate (mutual TLS)")
    parser.add_argument("--key", metavar="FILE", help="private key of --cert")
    return parser


def parse_arguments(argv) -> argparse.Namespace:
    top = Parser(
        prog="suite-client",
        description="Talk to the suite's services. 'suite-client SERVICE --help' for one.",
        epilog="services: " + "; ".join(f"{name}: {text}" for name, text in SUMMARIES.items()),
    )
    top.add_argument("service", metavar="SERVICE", choices=sorted(SUMMARIES))
    top.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    chosen = top.parse_args(argv)
    args = service_parser(chosen.service).parse_intermixed_args(chosen.rest)
    args.service = chosen.service
    args.udp = getattr(args, "udp", False)
    return args


def write_reply(line: bytes):
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.buffer.flush()


class StdinLines(LineReceiver):
    """Feeds standard input, line by line, to an exchange; `done` fires at end of input."""

    delimiter = b"\n"
    MAX_LENGTH = STDIN_MAX_LINE

    def __init__(self, exchange):
        self.exchange = exchange
        self.done = defer.Deferred()

    def lineReceived(self, line):
        self.exchange.send(line.removesuffix(b"\r"))

    def connectionLost(self, reason):
        rest = self.clearLineBuffer()
        if rest and not self.exchange.finished.called:
            self.exchange.send(rest)
        if not self.done.called:
            self.done.callback(None)


async def feed(reactor, exchange, messages):
    """Send MESSAGES, or standard input's lines as they come; then say we are done."""
    if messages:
        for message in messages:
            exchange.send(os.fsencode(message))
    else:
        reader = StdinLines(exchange)
        # Our own copy of fd 1: closing the reader must not close standard output.
        stdio = StandardIO(reader, stdout=os.dup(1), reactor=reactor)
        exchange.finished.addBoth(lambda result: (stdio.loseConnection(), result)[1])
        await reader.done
    exchange.done_sending()


async def connect(reactor, args, protocol):
    address = parse_address(args.address)
    if args.udp:
        if address.host is None:
            raise ValueError(f"{args.address}: --udp needs host:port or [v6]:port")
        return await defer.ensureDeferred(
            open_datagram(reactor, address.host, address.port, protocol)
        ).addTimeout(args.timeout, reactor)
    tls = None
    if args.tls:
        if address.hostname is None:
            raise ValueError(f"{args.address}: --tls needs a host name to verify")
        tls = client_tls(address.hostname, args.ca, args.cert, args.key)
    endpoint = stream_endpoint(reactor, address, args.timeout, tls)
    return await connectProtocol(endpoint, protocol).addTimeout(args.timeout, reactor)


async def run_exchange(reactor, args, exchange):
    """Connect EXCHANGE, send the messages (or standard input), wait for it to finish."""
    await connect(reactor, args, exchange)
    try:
        await feed(reactor, exchange, args.messages)
        await exchange.finished.addTimeout(args.timeout, reactor)
    finally:
        if args.udp:
            exchange.transport.stopListening()


async def lines(reactor, args):
    if args.udp:
        await run_exchange(reactor, args, DatagramExchange(on_reply=write_reply))
    else:
        await run_exchange(reactor, args, LineExchange(on_reply=write_reply))


async def log(reactor, args):
    if args.udp:
        await run_exchange(
            reactor, args, DatagramExchange(frame=syslog_message, expect_replies=False)
        )
    else:
        await run_exchange(reactor, args, SyslogSender())


async def sleep(reactor, args):
    client = await connect(reactor, args, amp.AMP())
    try:
        answer = await client.callRemote(Sleep, seconds=args.seconds).addTimeout(
            max(args.seconds, 0) + args.timeout, reactor
        )
    finally:
        client.transport.loseConnection()
    write_reply(b"%.6f" % answer["slept"])


COMMANDS = {"timestamp": lines, "echo": lines, "log": log, "sleep": sleep}


def describe(failure, args) -> str:
    """One line saying what failed."""
    e = failure.value
    codes = {cls: code.decode() for cls, code in Sleep.errors.items()}
    if isinstance(e, (defer.TimeoutError, defer.CancelledError, error.TimeoutError)):
        return f"{args.address}: timed out after {args.timeout:g} s"
    if isinstance(e, error.ConnectionRefusedError):
        return f"{args.address}: connection refused"
    if isinstance(e, error.DNSLookupError):
        return f"{args.address}: cannot resolve the host name"
    if isinstance(e, SSL.Error):
        reasons = [part[-1] for part in e.args[0] if part] if e.args and e.args[0] else []
        return f"{args.address}: TLS failed: {', '.join(reasons) or e}"
    if type(e).__name__ == "VerificationError":
        return f"{args.address}: TLS failed: certificate does not match the host name"
    if type(e) in codes:
        return f"{codes[type(e)]}: {e}"
    if isinstance(e, amp.RemoteAmpError):
        return f"{e.errorCode.decode()}: {e.description}"
    if isinstance(e, (error.ConnectionDone, error.ConnectionLost)):
        return f"{args.address}: connection closed by the server"
    if isinstance(e, ServerClosed):
        return f"{args.address}: {e}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename + ': ' if e.filename else ''}{e.strerror}"
    if isinstance(e, ValueError):
        return str(e)
    return f"{args.address}: {type(e).__name__}: {e}"


def main(argv=None):
    args = parse_arguments(argv)
    from twisted.internet import reactor

    status = []

    def start():
        d = defer.ensureDeferred(COMMANDS[args.service](reactor, args))
        d.addCallback(lambda _: status.append(0))

        def failed(failure):
            sys.stderr.write(f"suite-client: {describe(failure, args)}\n")
            status.append(1)

        d.addErrback(failed)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    sys.exit(status[0] if status else 1)
