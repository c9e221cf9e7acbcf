"""The `suite` plugin: every service enabled in one TOML file, as one MultiService."""

from suite.config import options_for
from suite.echo.service import SERVICE as ECHO
from suite.logger.service import SERVICE as LOGGER
from suite.names.service import SERVICE as NAMES
from suite.plugin import make_service
from suite.sleep.service import SERVICE as SLEEP
from suite.timestamp.service import SERVICE as TIMESTAMP

SERVICES = [TIMESTAMP, ECHO, LOGGER, SLEEP, NAMES]

DEFAULT_CONFIG = "etc/suite.toml"


class Options(options_for([], "Run every service enabled in a TOML config file.")):
    optParameters = [["config", "c", DEFAULT_CONFIG, "TOML config file (SPEC §3)"]]


def makeService(options, reactor=None):
    return make_service(SERVICES, options, reactor, only_listed=False)
