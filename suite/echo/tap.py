"""
twistd's `suite-echo` plugin: its command line, checked whole (the config
file and the options given) before anything starts, and the service it
starts.
"""

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore

from suite.app.compose import make_service, plugin_options
from suite.echo.service import SERVICE


class Options(plugin_options([SERVICE], SERVICE.description)):  # type: ignore[misc]  # base built at import from SERVICE
    """`twistd suite-echo`: --config and an option for every key of [echo] and [tls]."""


def makeService(options: Options, reactor: IReactorCore | None = None) -> IService:
    return make_service(options, reactor)
