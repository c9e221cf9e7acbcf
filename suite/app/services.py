"""
Every service the suite has, in the order they start: the `suite` plugin
runs those its config enables, and a single-service plugin's config may
hold the others' sections (it reads only its own).
"""

from suite.echo.service import SERVICE as ECHO
from suite.logger.service import SERVICE as LOGGER
from suite.names.service import SERVICE as NAMES
from suite.sleep.service import SERVICE as SLEEP
from suite.timestamp.service import SERVICE as TIMESTAMP

SERVICES = (TIMESTAMP, ECHO, LOGGER, SLEEP, NAMES)
