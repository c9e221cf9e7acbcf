"""twistd's `suite-echo` plugin: its command line and the service it starts."""

from suite.app.compose import service_plugin
from suite.echo.service import SERVICE

Options, makeService = service_plugin(SERVICE)
