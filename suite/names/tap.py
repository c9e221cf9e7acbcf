"""
twistd's `suite-names` plugin: its command line, checked whole (the config
file and the options given) before anything starts, and the service it
starts.
"""

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore

from suite.app.compose import make_service, plugin_options
from suite.names.service import SERVICE


class Options(plugin_options([SERVICE], SERVICE.description)):  # type: ignore[misc]  # base built at import from SERVICE
    """`twistd suite-names`: --config and an option for every key of [names] and [tls]."""


def makeService(options: Options, reactor: IReactorCore | None = None) -> IService:
    return make_service(options, reactor)
