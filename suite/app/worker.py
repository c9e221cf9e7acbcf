"""
A worker process: `python -m suite.app.worker ARGUMENTS`, started by the
parent (L{suite.app.supervisor}), never by hand.

ARGUMENTS (JSON) say where the plan comes from (the parent's config file
and command-line values), which descriptors it inherited (its control
connection, one connection per split service's shared part, and the
listening sockets by service, key and description) and its slot.  It
makes the same plan as the parent, builds every service that runs in
workers on those sockets, and runs until SIGTERM (drained as one process
drains) or until its parent is gone.  Its log events go to standard output
as JSON, which the parent logs marked with the slot.
"""

import json
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from twisted.logger import Logger, globalLogBeginner, jsonFileLogObserver

from suite.app.worker_control import ControlProtocol, report_of

log = Logger()


class WorkerControl(ControlProtocol):
    """The worker's end of the control connection: it answers beats with its report."""

    def __init__(self, root: Any, stop: Any) -> None:
        self.root = root
        self.stop = stop

    def received(self, message: dict[str, Any]) -> None:
        if "beat" in message:
            self.send({"beat": message["beat"], "report": report_of(self.root.parts())})

    def connectionLost(self, reason: Any = None) -> None:
        self.stop("the parent process is gone")


def install_reactor(name: str) -> Any:
    """The reactor twistd ran the parent on (NAME, as `--reactor` takes it), or the default."""
    if name:
        from twisted.application.reactors import installReactor

        return installReactor(name)
    from twisted.internet import reactor

    return reactor


def main(argv: Sequence[str]) -> int:
    arguments = json.loads(argv[0])
    slot = arguments["slot"]
    globalLogBeginner.beginLoggingTo(
        [jsonFileLogObserver(sys.stdout)], redirectStandardIO=False, discardBuffer=True
    )
    reactor = install_reactor(arguments.get("reactor", ""))

    # Imported once the reactor is installed: the services' modules may import it.
    from twisted.internet.protocol import Factory

    from suite.app.compose import WorkerRole, load, materialise
    from suite.app.lifecycle import walk
    from suite.app.services import SERVICES
    from suite.foundation.config import ConfigError
    from suite.net.accept_share import AcceptShare
    from suite.net.listeners import ListenerService

    declarations = [d for d in SERVICES if d.name in arguments["services"]]
    try:
        planned = load(
            declarations,
            arguments["config"],
            arguments["overrides"],
            arguments["only_listed"],
            inherited=True,
        )
        share_fd, slots = arguments["share"]
        role = WorkerRole(
            slot,
            {(s, key, description): fd for s, key, description, fd in arguments["sockets"]},
            arguments["channels"],
            AcceptShare(share_fd, slots, slot - 1),
        )
        root = materialise(planned, reactor, worker=role)
    except (ConfigError, SystemExit) as e:
        log.critical("worker {slot}: {reason}", slot=slot, reason=str(e))
        return 1

    stopping: list[str] = []

    def stop(why: str) -> None:
        if stopping or not reactor.running:
            return
        stopping.append(why)
        log.info("worker {slot} stopping: {why}", slot=slot, why=why)
        reactor.stop()

    def terminated(number: int, frame: FrameType | None) -> None:
        reactor.callFromThread(stop, signal.Signals(number).name)

    control = WorkerControl(root, stop)
    reactor.adoptStreamConnection(
        arguments["control"], socket.AF_UNIX, Factory.forProtocol(lambda: control)
    )

    try:
        root.privilegedStartService()  # adopts the sockets; a failure is one line
    except SystemExit:
        return 1

    def ready() -> None:
        root.startService()
        listeners = sum(isinstance(part, ListenerService) for part in walk(root))
        control.send({"ready": listeners})

    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.callWhenRunning(ready)
    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, terminated)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
