"""The `suite` plugin: every service enabled in one TOML file, as one MultiService."""

from suite.echo.service import SERVICE as ECHO
from suite.logger.service import SERVICE as LOGGER
from suite.names.service import SERVICE as NAMES
from suite.app.compose import make_service
from suite.foundation.options import options_for
from suite.sleep.service import SERVICE as SLEEP
from suite.timestamp.service import SERVICE as TIMESTAMP

SERVICES = [TIMESTAMP, ECHO, LOGGER, SLEEP, NAMES]

DEFAULT_CONFIG = "etc/suite.toml"

Options = options_for(
    [], "Run every service enabled in a TOML config file.", config_default=DEFAULT_CONFIG
)


def makeService(options, reactor=None):
    return make_service(SERVICES, options, reactor, only_listed=False)
