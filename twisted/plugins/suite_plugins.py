# twistd plugin declarations only: a failing import here would hide every
# plugin, so nothing but ServiceMaker is imported.
from twisted.application.service import ServiceMaker

suite = ServiceMaker(
    "suite",
    "suite.app.tap",
    "Run every service enabled in a TOML config file (--config)",
    "suite",
)
suite_timestamp = ServiceMaker(
    "suite-timestamp",
    "suite.timestamp.tap",
    "Timestamp server: each line or datagram answered '[time] line'",
    "suite-timestamp",
)
suite_echo = ServiceMaker(
    "suite-echo",
    "suite.echo.tap",
    "Echo server: line echo ('You said: ...') or RFC 862 raw echo",
    "suite-echo",
)
suite_logger = ServiceMaker(
    "suite-logger",
    "suite.logger.tap",
    "Syslog collector and relay: RFC 5424/3164 over TCP, UDP, TLS and RELP to JSON lines; "
    "forwards over RELP, TCP and TLS",
    "suite-logger",
)
suite_sleep = ServiceMaker(
    "suite-sleep",
    "suite.sleep.tap",
    "Sleep RPC over AMP: sleep N seconds, then answer",
    "suite-sleep",
)
suite_names = ServiceMaker(
    "suite-names",
    "suite.names.tap",
    "Name server over AMP, DNS and HTTP (Consul's API): register, look up, watch, "
    "health-check (TCP, HTTP, TTL, logs) and evict instances",
    "suite-names",
)
