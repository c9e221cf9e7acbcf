"""twistd's `suite-sleep` plugin: its command line and the service it starts."""

from suite.app.compose import service_plugin
from suite.sleep.service import SERVICE

Options, makeService = service_plugin(SERVICE)
