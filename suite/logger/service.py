"""The log collector: its [logger] section and how it is built."""

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from suite.foundation.config import (
    ServiceSettings,
    integer,
    key,
    listen,
    number,
    path,
)
from suite.foundation.declaration import Parts, ServiceDeclaration
from suite.foundation.jsonlines import BatchWriter, file_mode_key, open_output
from suite.logger.drain import ShutdownDrain
from suite.logger.protocol import SyslogDatagramProtocol, SyslogFactory
from suite.logger.records import RecordSink
from suite.net.connections import ConnectionLimits, idle_timeout
from suite.net.udpbuffer import DatagramLimits

MiB = 2**20


@dataclass(frozen=True, kw_only=True)
class LoggerSettings(DatagramLimits, ConnectionLimits, ServiceSettings):
    section = "logger"

    listen: tuple[str, ...] = listen("tcp:5140", "udp:5140")
    output: str = key(
        path(),
        "log/messages.jsonl",
        "JSON lines file of the records (its directory is created); - = standard output",
    )
    max_message: int = key(
        integer(1), 8192, "bytes of a message kept; longer ones are cut and marked truncated"
    )
    max_frame: int = key(
        integer(1),
        MiB,
        "largest octet-counted frame in bytes; a larger count closes the connection",
    )
    # Senders such as rsyslog keep a forwarding connection open while idle.
    idle_timeout: float = idle_timeout(0.0)
    rotate_bytes: int = key(integer(0), 16 * MiB, "rotate the output at this size; 0 = never")
    keep: int = key(integer(1), 10, "rotated files kept (FILE.1 ... FILE.N)")
    file_mode: int = file_mode_key("the output files")
    flush_interval: float = key(number(0), 0.2, "seconds a message may wait before it is written")
    max_batch: int = key(integer(1), MiB, "pending bytes that are written at once")
    max_buffer: int = key(
        integer(1),
        64 * MiB,
        "bytes of records held while the output cannot be written; then senders are held back",
    )
    shutdown_timeout: float = key(
        number(0),
        3.0,
        "seconds open connections are still read when the suite stops, until each has been "
        "quiet for 0.2 s; then one last read (at most 1 s more), the rest discarded and counted",
    )


def build(settings: LoggerSettings, reactor: IReactorTime) -> Parts:
    try:
        output = open_output(
            settings.output, settings.rotate_bytes, settings.keep, file_mode=settings.file_mode
        )
    except OSError as e:
        where = f" ({e.filename})" if e.filename and e.filename != settings.output else ""
        raise settings.error("output", f"cannot open: {e.strerror}{where}") from None
    writer = BatchWriter(
        output, reactor, settings.flush_interval, settings.max_batch, settings.max_buffer
    )
    sink = RecordSink(writer, reactor)
    factory = SyslogFactory(settings, reactor, sink)
    return Parts(
        factory,
        lambda: SyslogDatagramProtocol(sink, settings.max_message),
        services=(writer, ShutdownDrain(factory, reactor, settings.shutdown_timeout)),
    )


SERVICE = ServiceDeclaration(
    LoggerSettings,
    build,
    "Syslog collector (RFC 5424/3164 over TCP, UDP, TLS) writing JSON lines.",
    writes=("output",),
)
