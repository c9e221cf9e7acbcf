"""
`suite-client`: one command for every service, through L{suite.client.api}.
Exit status 0 on success; 130 and `interrupted` when stopped by SIGINT
(Ctrl-C) or SIGTERM; otherwise 1 and one line on standard error, never a
traceback.
"""

import argparse
import functools
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import NoReturn, TypeVar, Unpack

from twisted.internet import defer, error, task
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorThreads,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.stdio import StandardIO
from twisted.protocols import amp
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from suite.client import api
from suite.contracts.names import (
    Deregister,
    Lookup,
    NotFound,
    Register,
    Services,
    Unavailable,
    Watch,
)
from suite.contracts.sleep import Sleep
from suite.foundation.credentials import read_secret
from suite.foundation.printable import printable
from suite.foundation.version import describe_versions
from suite.logger.syslog import FACILITIES, SEVERITIES
from suite.names.registry import MAX_APP, PASSING, default_id
from suite.net.addresses import host_port
from suite.net.client_endpoints import (
    Address,
    client_tls,
    parse_address,
    stream_endpoint,
    tls_failure,
)

STDIN_MAX_LINE = 2**20
# The shell's status for a command a signal stopped (128 + SIGINT's number),
# used for SIGTERM too: either way the person, not the server, ended it.
INTERRUPTED_STATUS = 130

T = TypeVar("T")


class IClientReactor(
    api.IDatagramReactor, IReactorTime, IReactorFDSet, IReactorCore, IReactorThreads
):
    """
    The reactor the commands run on, in every role they ask of it: UDP
    ports and name resolution, timeouts, standard input, the client
    endpoints' connections, and turning a signal into a call in the loop.
    """


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and status 1, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: {message} (see --help)\n")


SUMMARIES = {
    "timestamp": "send lines, print the '[time] line' answers",
    "echo": "send lines, print what comes back",
    "log": "send syslog messages (RFC 5424; octet-counted over streams)",
    "sleep": "ask the sleep service to sleep SECONDS; print the seconds it measured",
    "names": "register, deregister, look up and list instances on a name server",
}
USAGES = {
    "timestamp": "(ADDRESS | --lookup NSADDRESS) [MESSAGE ...] [--udp] [options]",
    "echo": "(ADDRESS | --lookup NSADDRESS) [MESSAGE ...] [--udp] [options]",
    "log": "(ADDRESS | --lookup NSADDRESS) [MESSAGE ...] [--udp] [--facility F] [--severity S]"
    " [--app A] [--hostname H] [options]",
    "sleep": "(ADDRESS | --lookup NSADDRESS) SECONDS [options]",
    "names": "ADDRESS (register NAME HOST PORT [--description D] [--id ID] [--tag T ...]"
    " [--meta KEY=VALUE ...] [--logs-app APP [--max-silence SECONDS]] | deregister NAME HOST"
    " PORT | deregister --id ID | lookup NAME | services | watch NAME) [--token T |"
    " --token-file F] [options]",
}
# What each names action takes besides its options.
NAMES_WORDS = {
    "register": "NAME HOST PORT",
    "deregister": "NAME HOST PORT, or --id ID",
    "lookup": "NAME",
    "services": "nothing more",
    "watch": "NAME",
}
# The name each service is looked up under with --lookup (unless --name says otherwise).
REGISTERED_AS = {"timestamp": "timestamp", "echo": "echo", "log": "logger", "sleep": "sleep"}
TLS_HELP = (
    "TLS, verifying certificate and host name, to the service and, with --lookup, to "
    "the name servers too: one set of TLS options for both, as one site's CA and client "
    "certificate serve them all"
)
NAME_SERVER_TLS_HELP = (
    "TLS to the name server, verifying its certificate and host name, so "
    "that the token and the answers cannot be read or changed on the way"
)
NAMES_ACTIONS = {"register": 3, "deregister": 3, "lookup": 1, "services": 0, "watch": 1}
TOKEN_HELP = (
    "the name server's token: register and deregister need it; lookup, watch and "
    "services need it or its read token when it has one (--token-file or $SUITE_TOKEN "
    "keep it out of ps)"
)
LOOKUP_TOKEN_HELP = (
    "--lookup: the name servers' read token, when they have one "
    "(--token-file or $SUITE_TOKEN keep it out of ps)"
)


def header_field(name: str, longest: int) -> Callable[[str], str]:
    """An RFC 5424 header field: 1 to LONGEST printable ASCII characters, no spaces."""

    def check(value: str) -> str:
        if not 1 <= len(value) <= longest or not all(33 <= ord(c) <= 126 for c in value):
            raise argparse.ArgumentTypeError(
                f"{name} must be 1-{longest} printable ASCII characters without spaces"
            )
        return value

    return check


def logs_app(text: str) -> str:
    """A --logs-app value: a syslog app name as the name server takes it."""
    if not 1 <= len(text) <= MAX_APP or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(
            f"expected 1-{MAX_APP} printable characters without spaces, not {text!r}"
        )
    return text


def seconds_above_zero(text: str) -> float:
    """A --max-silence value: a number of seconds, more than 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected seconds above 0, not {text!r}")
    return seconds


def meta_pair(text: str) -> tuple[str, str]:
    """A --meta value: KEY=VALUE (the value may hold '=' too)."""
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def service_parser(service: str) -> Parser:
    """The options of one service (words and options may come in any order)."""
    parser = Parser(
        prog=f"suite-client {service}",
        description=SUMMARIES[service],
        usage=f"suite-client {service} {USAGES[service]}",
    )
    parser.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    if service in ("timestamp", "echo", "log"):
        parser.add_argument("--udp", action="store_true", help="use UDP")
    if service == "log":
        parser.add_argument(
            "--facility", choices=FACILITIES, default="user", help="syslog facility (default user)"
        )
        parser.add_argument(
            "--severity",
            choices=SEVERITIES,
            default="notice",
            help="syslog severity (default notice)",
        )
        parser.add_argument(
            "--app",
            type=header_field("app", 48),
            default="suite-client",
            help="APP-NAME (default suite-client)",
        )
        parser.add_argument(
            "--hostname",
            type=header_field("hostname", 255),
            help="HOSTNAME (default this host's name)",
        )
    if service == "names":
        parser.add_argument("--description", default="", help="register: free text")
        parser.add_argument(
            "--id",
            help="register: the instance's ID (default NAME@HOST:PORT); "
            "deregister: the instance of that ID",
        )
        parser.add_argument(
            "--tag",
            action="append",
            default=[],
            dest="tags",
            metavar="TAG",
            help="register: a tag (repeat for more)",
        )
        parser.add_argument(
            "--meta",
            action="append",
            default=[],
            type=meta_pair,
            metavar="KEY=VALUE",
            help="register: string metadata (repeat for more)",
        )
        parser.add_argument(
            "--logs-app",
            type=logs_app,
            metavar="APP",
            help="register: a logs check, warning once the name server has heard no "
            "syslog message from APP on HOST for --max-silence",
        )
        parser.add_argument(
            "--max-silence",
            type=seconds_above_zero,
            metavar="SECONDS",
            help="register, with --logs-app: seconds of silence allowed (default: the name "
            "server's, 60)",
        )
    parser.add_argument("--token", help=TOKEN_HELP if service == "names" else LOOKUP_TOKEN_HELP)
    parser.add_argument("--token-file", metavar="FILE", help="read --token from FILE")
    if service != "names":
        parser.add_argument(
            "--lookup",
            metavar="NSADDRESS[,NSADDRESS...]",
            help="find the service's address on a name server (the next one "
            "when one cannot be reached); --tls applies to the name "
            "servers too; instances announced for the other transport "
            "(tcp, tls) are skipped",
        )
        parser.add_argument("--name", help=f"name to look up (default: {REGISTERED_AS[service]})")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to connect, and to wait for answers once sent (default 10)",
    )
    parser.add_argument(
        "--tls", action="store_true", help=NAME_SERVER_TLS_HELP if service == "names" else TLS_HELP
    )
    parser.add_argument(
        "--ca",
        metavar="FILE",
        help="CA certificate to verify the servers with (default: the system's)",
    )
    parser.add_argument("--cert", metavar="FILE", help="client certificate (mutual TLS)")
    parser.add_argument("--key", metavar="FILE", help="private key of --cert")
    return parser


def given_token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """--token, else --token-file's content, else $SUITE_TOKEN, else none."""
    if args.token is not None and args.token_file is not None:
        parser.error("give --token or --token-file, not both")
    if args.token_file is not None:
        try:
            return read_secret(args.token_file)
        except ValueError as e:
            parser.error(f"--token-file {args.token_file}: {e}")
    return args.token if args.token is not None else os.environ.get("SUITE_TOKEN") or None


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    top = Parser(
        prog="suite-client",
        description="Talk to the suite's services. 'suite-client SERVICE --help' for one.",
        epilog="services: " + "; ".join(f"{name}: {text}" for name, text in SUMMARIES.items()),
    )
    top.add_argument("--version", action="version", version=describe_versions())
    top.add_argument("service", metavar="SERVICE", choices=sorted(SUMMARIES))
    top.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    chosen = top.parse_args(argv)
    parser = service_parser(chosen.service)
    args = parser.parse_intermixed_args(chosen.rest)
    args.service = chosen.service
    args.udp = getattr(args, "udp", False)
    args.lookup = getattr(args, "lookup", None)
    words = list(args.words)
    args.address = args.lookup
    if not args.lookup:
        if not words:
            parser.error("ADDRESS is required")
        args.address = words.pop(0)
    if args.service == "sleep":
        try:
            (args.seconds,) = map(float, words)
        except ValueError:
            parser.error("expected one number: SECONDS")
    elif args.service == "names":
        if not words or words[0] not in NAMES_ACTIONS:
            parser.error("expected register, deregister, lookup, services or watch")
        args.action, args.parameters = words[0], words[1:]
        by_id = args.action == "deregister" and args.id is not None
        if len(args.parameters) != (0 if by_id else NAMES_ACTIONS[args.action]):
            parser.error(f"{args.action}: expected {NAMES_WORDS[args.action]}")
        if args.action in ("register", "deregister") and not by_id:
            if not args.parameters[2].isdigit():
                parser.error(f"PORT must be a number, not {args.parameters[2]!r}")
        args.meta = dict(args.meta)  # a key given twice: the last value
        if args.max_silence is not None and args.logs_app is None:
            parser.error("--max-silence goes with --logs-app")
    else:
        args.messages = words
    args.token = given_token(parser, args)
    return args


def write_reply(line: bytes) -> None:
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.buffer.flush()


class StdinLines(LineReceiver):
    """Feeds standard input, line by line, to an exchange; `done` fires at end of input."""

    delimiter = b"\n"
    MAX_LENGTH = STDIN_MAX_LINE

    def __init__(self, exchange: api.Exchange) -> None:
        self.exchange = exchange
        self.done: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.exchange.send(line.removesuffix(b"\r"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        rest = self.clearLineBuffer()
        if rest and not self.exchange.finished.called:
            self.exchange.send(rest)
        if not self.done.called:
            self.done.callback(None)


async def feed(reactor: IClientReactor, exchange: api.Exchange, messages: list[str]) -> None:
    """Send MESSAGES, or standard input's lines as they come; then say we are done."""
    if messages:
        for message in messages:
            exchange.send(os.fsencode(message))
    else:
        reader = StdinLines(exchange)
        # Our own copy of fd 1: closing the reader must not close standard output.
        stdio = StandardIO(  # type: ignore[call-arg]  # mypy reads stdio's Windows branch
            reader, stdout=os.dup(1), reactor=reactor
        )

        def stop_reading(result: T) -> T:  # the server is done (or gone): stop waiting for input
            stdio.loseConnection()
            return result

        exchange.finished.addBoth(stop_reading)
        await reader.done
    exchange.done_sending()


async def addresses(reactor: IClientReactor, args: argparse.Namespace) -> list[Address]:
    """
    Where the service is: ADDRESS, or the live instances a name server
    gives (--lookup): each name server in turn until one answers (one that
    cannot be reached, or answers UNAVAILABLE, passes to the next).  --tls
    applies to the name servers too: a TLS service found through a lookup
    an attacker could rewrite would be no safer than the lookup.  Instances
    [announce] described as the other transport (`tcp` under --tls, `tls`
    without) are left out, so a service announced on both is reached on the
    one this client speaks.
    """
    if not args.lookup:
        return [parse_address(args.address)]
    name = args.name or REGISTERED_AS[args.service]
    name_servers = [part.strip() for part in args.lookup.split(",") if part.strip()]
    if not name_servers:
        raise ValueError(f"--lookup {args.lookup!r}: no name server given")
    instances: list[api.Instance] = []
    for number, name_server in enumerate(name_servers, 1):
        args.address = name_server
        endpoint = endpoint_for(reactor, args, parse_address(name_server))
        try:
            instances, _ = await api.lookup(reactor, endpoint, name, args.token).addTimeout(
                args.timeout, reactor
            )
            break
        except (error.ConnectError, defer.TimeoutError, error.ConnectionClosed, Unavailable):
            if number == len(name_servers):
                raise
    speaks, other = ("TLS", "tcp") if args.tls and not args.udp else ("plain TCP", "tls")
    usable = [
        parse_address(host_port(i.host, i.port)) for i in instances if i.description != other
    ]
    if not usable:
        raise NotFound(f"no live instance of {name} over {speaks}")
    return usable


async def first_answering(
    reactor: IClientReactor, args: argparse.Namespace, attempt: Callable[[Address], Awaitable[T]]
) -> T:
    """
    ATTEMPT(address) on each candidate address in turn until one connects;
    errors name the address tried last.
    """

    def attempt_noted(address: Address) -> Awaitable[T]:
        args.address = address.text  # what an error names
        return attempt(address)

    return await api.first_connecting(await addresses(reactor, args), attempt_noted)


def endpoint_for(
    reactor: IClientReactor, args: argparse.Namespace, address: Address
) -> IStreamClientEndpoint:
    tls = None
    if args.tls:
        if address.hostname is None:
            raise ValueError(f"{address.text}: --tls needs a host name to verify")
        tls = client_tls(address.hostname, args.ca, args.cert, args.key)
    return stream_endpoint(reactor, address, args.timeout, tls)


def open_exchange(
    reactor: IClientReactor,
    args: argparse.Namespace,
    address: Address,
    **options: Unpack[api.ExchangeOptions],
) -> defer.Deferred[api.DatagramExchange] | defer.Deferred[api.StreamExchange]:
    """An api exchange with ADDRESS over UDP (--udp) or a stream."""
    opening: defer.Deferred[api.DatagramExchange] | defer.Deferred[api.StreamExchange]
    if args.udp:
        if address.host is None or address.port is None:
            raise ValueError(f"{address.text}: --udp needs host:port or [v6]:port")
        opening = api.open_datagrams(reactor, address.host, address.port, **options)
    else:
        opening = api.open_stream(reactor, endpoint_for(reactor, args, address), **options)
    return opening.addTimeout(args.timeout, reactor)


async def run_exchange(
    reactor: IClientReactor, args: argparse.Namespace, **options: Unpack[api.ExchangeOptions]
) -> None:
    """Connect an exchange, send the messages (or standard input), wait for it to finish."""
    exchange: api.Exchange = await first_answering(
        reactor, args, lambda address: open_exchange(reactor, args, address, **options)
    )
    await feed(reactor, exchange, args.messages)
    await exchange.finished.addTimeout(args.timeout, reactor)


async def lines(reactor: IClientReactor, args: argparse.Namespace) -> None:
    frame = bytes if args.udp else api.line_frame
    await run_exchange(reactor, args, on_reply=write_reply, frame=frame)


async def log(reactor: IClientReactor, args: argparse.Namespace) -> None:
    pri = FACILITIES.index(args.facility) * 8 + SEVERITIES.index(args.severity)
    frame = functools.partial(
        api.syslog_message if args.udp else api.octet_counted_syslog,
        app=args.app,
        pri=pri,
        hostname=args.hostname,
    )
    await run_exchange(reactor, args, frame=frame, expect_replies=False)


async def sleep(reactor: IClientReactor, args: argparse.Namespace) -> None:
    def attempt(address: Address) -> defer.Deferred[float]:
        answer = api.sleep(reactor, endpoint_for(reactor, args, address), args.seconds)
        return answer.addTimeout(max(args.seconds, 0) + args.timeout, reactor)

    write_reply(b"%.6f" % await first_answering(reactor, args, attempt))


def looked_up(name: str, instance: api.Instance) -> str:
    """
    One line of `lookup`: ADDRESS, TAB, DESCRIPTION, then a TAB-separated
    column for each of what differs from a plain AMP registration: `id=ID`
    (unless NAME@ADDRESS), `tags=A,B`, `meta.KEY=VALUE` per key and
    `status=warning`; empty columns at the end left out.
    """
    address = host_port(instance.host, instance.port)
    columns = [address, instance.description]
    if instance.id and instance.id != default_id(name, instance.host, instance.port):
        columns.append(f"id={instance.id}")
    if instance.tags:
        columns.append("tags=" + ",".join(instance.tags))
    columns += [f"meta.{key}={value}" for key, value in sorted(instance.meta.items())]
    if instance.status != PASSING:
        columns.append(f"status={instance.status}")
    return "\t".join(printable(column) for column in columns).rstrip("\t")


def watched(instance: api.Instance) -> str:
    """An instance of a `watch` line: ADDRESS, {TAG,TAG} if tagged, (STATUS) unless passing."""
    shown = host_port(instance.host, instance.port)
    if instance.tags:
        shown += "{" + ",".join(instance.tags) + "}"
    if instance.status != PASSING:
        shown += f"({instance.status})"
    return printable(shown)


async def names(reactor: IClientReactor, args: argparse.Namespace) -> None:
    endpoint = endpoint_for(reactor, args, parse_address(args.address))
    parameters = args.parameters
    if args.action == "lookup":
        instances, _ = await api.lookup(reactor, endpoint, parameters[0], args.token).addTimeout(
            args.timeout, reactor
        )
        for instance in instances:
            write_reply(looked_up(parameters[0], instance).encode())
    elif args.action == "watch":

        def print_change(name: str, instances: list[api.Instance]) -> None:
            where = " ".join(watched(instance) for instance in instances)
            write_reply(f"{printable(name)}: {where or '(no live instance)'}".encode())

        await api.watch(reactor, endpoint, parameters[0], print_change, args.token)
    elif args.action == "services":
        found = api.services(reactor, endpoint, args.token)
        for name in await found.addTimeout(args.timeout, reactor):
            write_reply(printable(name).encode())
    elif args.action == "register":
        name, host, port = parameters
        registered = api.register(
            reactor,
            endpoint,
            name,
            host,
            port,
            args.description,
            args.token,
            instance_id=args.id,
            tags=args.tags,
            meta=args.meta,
            logs_app=args.logs_app,
            max_silence=args.max_silence,
        )
        await registered.addTimeout(args.timeout, reactor)
    elif args.id is not None:
        await api.deregister_id(reactor, endpoint, args.id, args.token).addTimeout(
            args.timeout, reactor
        )
    else:
        name, host, port = parameters
        await api.deregister(reactor, endpoint, name, host, port, args.token).addTimeout(
            args.timeout, reactor
        )


COMMANDS = {"timestamp": lines, "echo": lines, "log": log, "sleep": sleep, "names": names}


ERROR_CODES = {
    error: code.decode()
    for command in (Sleep, Register, Deregister, Lookup, Services, Watch)
    for error, code in command.errors.items()
}


def describe(failure: Failure, args: argparse.Namespace) -> str:
    """One line saying what failed."""
    e = failure.value
    if isinstance(e, (defer.TimeoutError, defer.CancelledError, error.TimeoutError)):
        return f"{args.address}: timed out after {args.timeout:g} s"
    if isinstance(e, error.ConnectionRefusedError):
        return f"{args.address}: connection refused"
    if isinstance(e, error.DNSLookupError):
        return f"{args.address}: cannot resolve the host name"
    if (failed := tls_failure(e)) is not None:
        return f"{args.address}: {failed}"
    if isinstance(e, Exception) and type(e) in ERROR_CODES:
        return f"{ERROR_CODES[type(e)]}: {e}"
    if isinstance(e, amp.RemoteAmpError):
        return f"{e.errorCode.decode()}: {e.description}"
    if isinstance(e, (error.ConnectionDone, error.ConnectionLost)):
        return f"{args.address}: connection closed by the server"
    if isinstance(e, api.ServerClosed):
        return f"{args.address}: {e}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename + ': ' if e.filename else ''}{e.strerror}"
    if isinstance(e, ValueError):
        return str(e)
    return f"{args.address}: {type(e).__name__}: {e}"


class Interruption:
    """
    SIGINT (Ctrl-C) and SIGTERM cancel the command instead of stopping the
    reactor: stopping it would close the connections under the command,
    which would then report the server as having closed them.  A signal
    the process started with ignored (a background job's Ctrl-C) stays
    ignored.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, reactor: IClientReactor) -> None:
        self.reactor = reactor
        self.command: defer.Deferred[None] | None = None
        self.happened = False
        self.handled = [s for s in self.SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]

    def install(self) -> None:
        """
        Handle the signals: now, and again once the reactor runs, because
        the reactor puts its own SIGTERM handler in place when it starts.
        """
        self.handle()
        self.reactor.callWhenRunning(self.handle)

    def handle(self) -> None:
        for number in self.handled:
            signal.signal(number, self.received)

    def received(self, number: int, frame: FrameType | None) -> None:
        # A signal handler runs between any two lines: it only asks the loop,
        # which runs the call once the command is under way.
        self.reactor.callFromThread(self.interrupt)

    def interrupt(self) -> None:
        """Cancel the command: whatever it waits for fails, and so does the command."""
        if self.command is not None and not self.command.called:
            self.happened = True
            self.command.cancel()


async def run(reactor: IClientReactor, args: argparse.Namespace) -> None:
    """
    The command of ARGS; a failure becomes its one line and exit status 1,
    an interruption `interrupted` and status 130.
    """
    interruption = Interruption(reactor)
    interruption.install()
    interruption.command = command = defer.ensureDeferred(COMMANDS[args.service](reactor, args))
    try:
        await command
    except Exception:
        if interruption.happened:
            sys.stderr.write("suite-client: interrupted\n")
            raise SystemExit(INTERRUPTED_STATUS) from None
        sys.stderr.write(f"suite-client: {printable(describe(Failure(), args))}\n")
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))
