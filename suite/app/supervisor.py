"""
The parent of worker processes (`workers` above 1).

The parent binds every listener (L{suite.net.listeners}, held: never read
here), then starts one worker process per slot, `python -m
suite.app.worker`, which inherits the listening sockets and serves them as
one process would.  The parent:

- restarts a worker that ends while the suite runs, after a backoff that
  starts at 1 s and doubles to 30 s (back to 1 s once a worker has run for
  30 s), and logs each exit and restart;
- kills (and so restarts) a worker that leaves heartbeats unanswered for
  HUNG_AFTER seconds, and withholds the systemd watchdog's ping while one is
  late by more than the watchdog's interval;
- relays each worker's log events into its own log, marked `worker N`;
- forwards SIGHUP (reopen files) to every worker;
- on SIGTERM, stops first (L{IStopsFirst}): every worker is sent SIGTERM
  and drains as a single process does; the parent's own parts (the
  logger's writer, the name server) stop once the last worker has exited,
  and a worker still running after KILL_AFTER seconds is killed;
- answers /metrics, /health and /status for all: each worker reports its
  samples, problems and summaries at each heartbeat (L{WorkerReports}), and
  the counters of a worker that ended are kept, so that sums never go
  backwards.
"""

import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from suite.app.worker_control import HEARTBEAT, ControlProtocol, sample_value
from suite.foundation.health import DEGRADED, FAILING
from suite.foundation.interfaces import (
    IHealthSource,
    IMetricSource,
    IReopenable,
    IStopsFirst,
    ISummarySource,
)
from suite.foundation.metrics import COUNTER, HISTOGRAM, METRICS, Histogram
from suite.net.accept_share import ABSENT, AcceptShare
from suite.net.listeners import ListenerService

log = Logger()

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0  # a worker that ran this long starts its slot's backoff afresh
HUNG_AFTER = 30.0  # seconds of unanswered heartbeats before a worker is killed
KILL_AFTER = 30.0  # seconds a stopping worker gets before it is killed
MAX_LOG_LINE = 2**20  # a worker's log line longer than this is cut
# What systemd gave the parent alone: the workers must not notify it, nor look for its sockets.
PARENT_ONLY_ENVIRONMENT = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)
FIRST_INHERITED_FD = 3  # the control connection; the channels and listeners follow


@dataclass(frozen=True)
class WorkerLaunch:
    """
    What every worker is started with: the plan's source (config file,
    command-line values, services, whether only those listed) as JSON-able
    values, and the reactor twistd chose.
    """

    config: str | None
    overrides: Mapping[str, Mapping[str, Any]]
    services: tuple[str, ...]
    only_listed: bool
    reactor: str = ""

    def argv(self, slot: int, fds: Mapping[str, Any]) -> list[str]:
        arguments = {
            "slot": slot,
            "config": self.config,
            "overrides": {k: dict(v) for k, v in self.overrides.items()},
            "services": list(self.services),
            "only_listed": self.only_listed,
            "reactor": self.reactor,
            **fds,
        }
        return [sys.executable, "-m", "suite.app.worker", json.dumps(arguments)]


def worker_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in PARENT_ONLY_ENVIRONMENT}


@dataclass
class Slot:
    """One worker's place: the process in it now, and what it last reported."""

    number: int
    process: IProcessTransport | None = None
    control: "ParentControl | None" = None
    started: float = 0.0
    ready: bool = False
    backoff: float = FIRST_BACKOFF
    restart: IDelayedCall | None = None
    exit: str = ""  # how the last process ended, for /health
    beat_sent: int = 0
    beat_answered: int = 0
    answered_at: float = 0.0
    samples: list[list[Any]] = field(default_factory=list)
    problems: list[list[str]] = field(default_factory=list)
    summaries: dict[str, Any] = field(default_factory=dict)
    # Counters and histograms of the processes that ended, by (service, name, labels).
    retired: dict[tuple[str, str, tuple[str, ...]], float | Histogram] = field(
        default_factory=dict
    )

    pid: int | None = None  # the process's, kept for the lines logged once it ended
    killed: bool = False  # sent SIGKILL for not answering: once is enough

    def retire(self) -> None:
        """Keep the counters the ending process last reported (gauges end with it)."""
        for service, name, labels, value in self.samples:
            metric = METRICS.get(name)
            if metric is None or metric.kind not in (COUNTER, HISTOGRAM):
                continue
            key = (service, name, tuple(labels))
            kept = self.retired.get(key)
            added = sample_value(value)
            if isinstance(added, Histogram):
                if isinstance(kept, Histogram):
                    added.add(kept)
                self.retired[key] = added
            else:
                self.retired[key] = added + (kept if isinstance(kept, int | float) else 0)
        self.samples, self.problems, self.summaries = [], [], {}


class ParentControl(ControlProtocol):
    """The parent's end of one worker's control connection."""

    def __init__(self, supervisor: "WorkerSupervisor", slot: Slot) -> None:
        self.supervisor = supervisor
        self.slot = slot

    def received(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.supervisor.worker_ready(self.slot, int(message["ready"]))
        if "beat" in message:
            self.supervisor.beat_answered(self.slot, int(message["beat"]), message["report"])

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.slot.control is self:
            self.slot.control = None


class WorkerProcess(ProcessProtocol):
    """
    One worker process: its log events (JSON, one per line, on its standard
    output) and anything it writes to standard error are logged here,
    marked with its slot.
    """

    def __init__(self, supervisor: "WorkerSupervisor", slot: Slot) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD not in self._partial:
            return
        *lines, rest = (self._partial[childFD] + data).split(b"\n")
        if len(rest) > MAX_LOG_LINE:
            lines.append(rest[:MAX_LOG_LINE])
            rest = b""
        self._partial[childFD] = rest
        for line in lines:
            self.relay(childFD, line)

    def relay(self, childFD: int, line: bytes) -> None:
        text = line.decode("utf-8", "backslashreplace").strip("\x1e\r")
        if not text:
            return
        if childFD == 1:
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if isinstance(event, dict) and "log_level" in event:
                namespace = event.get("log_namespace", "suite")
                level = getattr(event["log_level"], "name", "info")
                event["worker"] = self.slot.number
                event["log_system"] = f"worker {self.slot.number} {namespace}#{level}"
                globalLogPublisher(event)
                return
        log.warn(
            "worker {slot}: {line}",
            slot=self.slot.number,
            line=text[:MAX_LOG_LINE],
            worker=self.slot.number,
        )

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in self._partial.items():
            if rest:
                self.relay(childFD, rest)
        self.supervisor.worker_ended(self.slot, reason)


def describe_exit(reason: Failure) -> str:
    value = reason.value
    signal_number = getattr(value, "signal", None)
    if signal_number is not None:
        try:
            return f"killed by {signal.Signals(signal_number).name}"
        except ValueError:
            return f"killed by signal {signal_number}"
    return f"exited with status {getattr(value, 'exitCode', None)}"


@implementer(IStopsFirst, IReopenable, IHealthSource, IMetricSource)
class WorkerSupervisor(Service):
    """
    COUNT worker processes started with LAUNCH on the sockets of HELD
    (the parent's held listeners, by service name) and with one connection
    to each service's part in the parent, served by CHANNELS' factories.
    """

    name = "workers"

    def __init__(
        self,
        count: int,
        launch: WorkerLaunch,
        reactor: Any,
        held: Sequence[tuple[str, ListenerService]] = (),
        channels: Mapping[str, Factory] | None = None,
        environ: Callable[[], dict[str, str]] = worker_environment,
    ) -> None:
        self.count = count
        self.launch = launch
        self.reactor = reactor
        self.held = list(held)
        self.channels = dict(channels or {})
        self.environ = environ
        self.slots = [Slot(number) for number in range(1, count + 1)]
        # The workers' open connections, so that they take turns accepting.
        self.share = AcceptShare.create(count)
        self.stopping = False
        self.exits = 0  # workers that ended while the suite ran
        self._waiting: list[defer.Deferred[None]] = []  # when_ready's
        self._ended: dict[int, defer.Deferred[None]] = {}
        self._beats = LoopingCall(self.beat)
        self._beats.clock = reactor

    # Starting and restarting

    def startService(self) -> None:
        Service.startService(self)
        self.stopping = False
        self.reactor.callWhenRunning(self._start_workers)

    def _start_workers(self) -> None:
        if not self.running:
            return
        for slot in self.slots:
            self.start_worker(slot)
        self._beats.start(HEARTBEAT, now=False)

    def start_worker(self, slot: Slot) -> None:
        """Start SLOT's process, handing it its control connection, channels and sockets."""
        slot.restart = None
        inherited: dict[int, int] = {}
        to_close: list[socket.socket] = []
        next_fd = FIRST_INHERITED_FD
        parent_control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        to_close.append(child_control)
        inherited[next_fd] = child_control.fileno()
        fds: dict[str, Any] = {"control": next_fd, "channels": {}, "sockets": []}
        next_fd += 1
        inherited[next_fd] = self.share.fd
        fds["share"] = [next_fd, self.count]
        next_fd += 1
        channel_ends = []
        for service_name in self.channels:
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            channel_ends.append((service_name, parent_end))
            to_close.append(child_end)
            inherited[next_fd] = child_end.fileno()
            fds["channels"][service_name] = next_fd
            next_fd += 1
        for service_name, listener in self.held:
            port = listener.port
            if port is None:
                continue
            inherited[next_fd] = port.fileno()  # type: ignore[attr-defined]  # a FileDescriptor
            fds["sockets"].append(
                [service_name, listener.listener.key, listener.listener.description, next_fd]
            )
            next_fd += 1
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r", **inherited}
        try:
            slot.process = self.reactor.spawnProcess(
                WorkerProcess(self, slot),
                sys.executable,
                self.launch.argv(slot.number, fds),
                env=self.environ(),
                path=os.getcwd(),
                childFDs=child_fds,
            )
        except OSError as e:
            parent_control.close()
            for _, end in channel_ends:
                end.close()
            for end in to_close:
                end.close()
            self._spawn_failed(slot, e)
            return
        for end in to_close:
            end.close()
        slot.pid = slot.process.pid
        slot.killed = False
        self.share.mark(slot.number - 1, 0)
        slot.started = self.reactor.seconds()
        slot.ready = False
        slot.answered_at = slot.started
        slot.beat_sent = slot.beat_answered = 0
        control = ParentControl(self, slot)
        slot.control = control
        self._adopt(parent_control, _single(control))
        for service_name, end in channel_ends:
            self._adopt(end, self.channels[service_name])
        log.info(
            "worker {slot} started (pid {pid})",
            slot=slot.number,
            pid=slot.pid,
            worker=slot.number,
        )

    def _adopt(self, end: socket.socket, factory: Factory) -> None:
        """Serve the parent's END of a connection with FACTORY; the reactor keeps its own copy."""
        try:
            self.reactor.adoptStreamConnection(end.fileno(), socket.AF_UNIX, factory)
        finally:
            end.close()

    def _spawn_failed(self, slot: Slot, e: OSError) -> None:
        slot.exit = f"could not be started: {e.strerror or e}"
        log.error(
            "worker {slot} {exit}; trying again in {delay:g} s",
            slot=slot.number,
            exit=slot.exit,
            delay=slot.backoff,
        )
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: Slot) -> None:
        if self.stopping:
            return
        delay = slot.backoff
        slot.backoff = min(slot.backoff * 2, MAX_BACKOFF)
        slot.restart = self.reactor.callLater(delay, self.start_worker, slot)

    def worker_ready(self, slot: Slot, listeners: int) -> None:
        slot.ready = True
        if all(s.ready for s in self.slots):
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def when_ready(self) -> "defer.Deferred[None]":
        """Fires once every worker has said its listeners serve."""
        if all(s.ready for s in self.slots):
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiting)
        return waiting

    def worker_ended(self, slot: Slot, reason: Failure) -> None:
        ran = self.reactor.seconds() - slot.started
        pid = slot.pid
        slot.process = None
        slot.control = None
        slot.ready = False
        self.share.mark(slot.number - 1, ABSENT)  # the others do not wait for it
        slot.retire()
        slot.exit = describe_exit(reason)
        ended = self._ended.pop(slot.number, None)
        if ended is not None:
            ended.callback(None)
        if self.stopping or not self.running:
            log.info(
                "worker {slot} (pid {pid}) {exit}",
                slot=slot.number,
                pid=pid,
                exit=slot.exit,
                worker=slot.number,
            )
            return
        self.exits += 1
        if ran >= STABLE_AFTER:
            slot.backoff = FIRST_BACKOFF
        log.error(
            "worker {slot} (pid {pid}) {exit} after {ran:.1f} s; restarting it in {delay:g} s",
            slot=slot.number,
            pid=pid,
            exit=slot.exit,
            ran=ran,
            delay=slot.backoff,
            worker=slot.number,
        )
        self._schedule_restart(slot)

    # Heartbeats, reports and the watchdog

    def beat(self) -> None:
        now = self.reactor.seconds()
        for slot in self.slots:
            if slot.process is None:
                continue
            if now - slot.answered_at > HUNG_AFTER and not slot.killed:
                slot.killed = True
                log.error(
                    "worker {slot} (pid {pid}) has not answered for {late:.0f} s: killing it",
                    slot=slot.number,
                    pid=slot.pid,
                    late=now - slot.answered_at,
                    worker=slot.number,
                )
                self._signal(slot, "KILL")
                continue
            if slot.control is not None:
                slot.beat_sent += 1
                slot.control.send({"beat": slot.beat_sent})

    def beat_answered(self, slot: Slot, number: int, report: dict[str, Any]) -> None:
        slot.beat_answered = number
        slot.answered_at = self.reactor.seconds()
        slot.samples = report.get("samples", [])
        slot.problems = report.get("problems", [])
        slot.summaries = report.get("summaries", {})

    def late(self, within: float) -> list[Slot]:
        """
        The ready workers late by more than WITHIN seconds: their last answer
        is older than that and the HEARTBEAT they answer at.  (One still
        starting is not: the hang check kills it if it never answers.)
        """
        now = self.reactor.seconds()
        return [
            s
            for s in self.slots
            if s.process is not None and s.ready and now - s.answered_at > within + HEARTBEAT
        ]

    def reports(self, service_name: str) -> "WorkerReports":
        """The part standing for SERVICE_NAME's workers in the parent's tree."""
        return WorkerReports(self, service_name)

    # Signals and stopping

    def _signal(self, slot: Slot, name: str) -> None:
        if slot.process is None:
            return
        try:
            slot.process.signalProcess(name)
        except error.ProcessExitedAlready:
            pass

    def reopen(self) -> None:
        """SIGHUP: every worker reopens its files."""
        for slot in self.slots:
            self._signal(slot, "HUP")

    def stopService(self) -> "defer.Deferred[None]":
        """SIGTERM to every worker; fires once all have exited (killed after KILL_AFTER)."""
        Service.stopService(self)
        self.stopping = True
        # No worker is started again: the parent's copies of the sockets go now, so that
        # once the last worker has closed its own, a new client is refused, not left waiting.
        for _, listener in self.held:
            listener.release()
        if self._beats.running:
            self._beats.stop()
        waits = []
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
            if slot.process is None:
                continue
            ended: defer.Deferred[None] = defer.Deferred()
            self._ended[slot.number] = ended
            self._signal(slot, "TERM")
            killer = self.reactor.callLater(KILL_AFTER, self._kill_late, slot)
            ended.addBoth(_cancelling, killer)
            waits.append(ended)
        return defer.DeferredList(waits).addCallback(lambda _: None)

    def _kill_late(self, slot: Slot) -> None:
        log.error(
            "worker {slot} (pid {pid}) still running {after:g} s after SIGTERM: killing it",
            slot=slot.number,
            pid=slot.pid,
            after=KILL_AFTER,
            worker=slot.number,
        )
        self._signal(slot, "KILL")

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        yield "workers_running", (), sum(slot.process is not None for slot in self.slots)
        yield "worker_exits", (), self.exits

    def health_problems(self) -> list[tuple[str, str]]:
        down = [s for s in self.slots if s.process is None]
        if not down or self.stopping:
            return []
        if len(down) == len(self.slots):
            return [(FAILING, "no worker is running")]
        return [
            (DEGRADED, f"worker {slot.number} is not running ({slot.exit}; restarting)")
            for slot in down
        ]


def _cancelling(result: object, call: IDelayedCall) -> object:
    """RESULT, once CALL (a pending kill) is cancelled."""
    if call.active():
        call.cancel()
    return result


def _single(protocol: ControlProtocol) -> Factory:
    """A factory whose one connection is served by PROTOCOL."""
    return Factory.forProtocol(lambda: protocol)


@implementer(IMetricSource, IHealthSource, ISummarySource)
class WorkerReports(Service):
    """
    What the workers last reported of one service (SERVICE_NAME), as a part
    of the parent's tree: their samples (added to the parent's own by the
    collector) and the counters of workers that ended, their problems
    (marked with the workers that have them), and the first worker's summary.
    """

    def __init__(self, supervisor: WorkerSupervisor, service_name: str) -> None:
        self.setName(f"{service_name} workers")
        self.supervisor = supervisor
        self.service_name = service_name

    def metric_samples(self) -> Iterator[tuple[str, tuple, object]]:
        for slot in list(self.supervisor.slots):
            for service, name, labels, value in list(slot.samples):
                if service == self.service_name:
                    yield name, tuple(labels), sample_value(value)
            for (service, name, labels), kept in list(slot.retired.items()):
                if service == self.service_name:
                    yield name, labels, kept

    def health_problems(self) -> list[tuple[str, str]]:
        having: dict[tuple[str, str], list[int]] = {}
        for slot in self.supervisor.slots:
            for service, severity, text in slot.problems:
                if service == self.service_name:
                    having.setdefault((severity, text), []).append(slot.number)
        return [
            (severity, f"{_workers(numbers)}: {text}")
            for (severity, text), numbers in having.items()
        ]

    def summary(self) -> dict[str, object]:
        for slot in self.supervisor.slots:
            found = slot.summaries.get(self.service_name)
            if found is not None:
                return dict(found)
        return {}


def _workers(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"worker {numbers[0]}"
    return "workers " + ", ".join(map(str, numbers))
