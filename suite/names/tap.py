"""twistd's `suite-names` plugin: its command line and the service it starts."""

from suite.app.compose import service_plugin
from suite.names.service import SERVICE

Options, makeService = service_plugin(SERVICE)
