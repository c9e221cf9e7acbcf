"""The log collector: `suite-logger` plugin and [logger] section."""

from suite.config import ENABLED, Key, Section, integer, number, text
from suite.endpoints import TLS_LISTEN, listen_key
from suite.logger.protocol import SyslogDatagramProtocol, SyslogFactory
from suite.logger.records import RecordSink
from suite.logger.writer import BatchWriter, open_output
from suite.plugin import Parts, ServiceDefinition, make_service
from suite.streams import stream_keys

MiB = 2**20

SECTION = Section(
    "logger",
    (
        ENABLED,
        listen_key("tcp:5140", "udp:5140"),
        TLS_LISTEN,
        Key("output", text(), "var/log/suite/messages.jsonl", "JSON lines file; - = standard output"),
        Key("max_message", integer(1), 8192, "longer messages are cut and marked truncated"),
        Key("max_frame", integer(1), MiB, "an octet count above it closes the connection"),
        # Senders such as rsyslog keep a forwarding connection open while idle.
        *stream_keys(idle_timeout=0.0),
        Key("rotate_bytes", integer(0), 16 * MiB, "rotate the output at this size; 0 = never"),
        Key("keep", integer(1), 10, "rotated files kept (FILE.1 ... FILE.N)"),
        Key("flush_interval", number(0), 0.2, "seconds a message may wait before it is written"),
        Key("max_batch", integer(1), MiB, "pending bytes that are written at once"),
    ),
)


def build(settings, reactor) -> Parts:
    try:
        output = open_output(settings.output, settings.rotate_bytes, settings.keep)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and e.filename != settings.output else ""
        raise settings.error("output", f"cannot open: {e.strerror}{where}") from None
    writer = BatchWriter(output, reactor, settings.flush_interval, settings.max_batch)
    sink = RecordSink(writer, reactor)
    factory = SyslogFactory(
        SECTION.name, reactor, settings.max_connections, settings.idle_timeout,
        sink, settings.max_message, settings.max_frame,
    )
    return Parts(
        factory,
        lambda: SyslogDatagramProtocol(sink, settings.max_message),
        services=(writer,),
    )


SERVICE = ServiceDefinition(SECTION, build)
Options = SERVICE.options("Syslog collector (RFC 5424/3164 over TCP, UDP, TLS) writing JSON lines.")


def makeService(options, reactor=None):
    return make_service([SERVICE], options, reactor)
