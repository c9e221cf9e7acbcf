"""
The `suite` plugin: every service enabled in one TOML file, each a named
service under one root.  Its command line is the config file alone,
checked whole before anything starts.
"""

from twisted.internet.interfaces import IReactorCore

from suite.app.compose import make_service, plugin_options
from suite.app.lifecycle import SuiteService
from suite.app.services import SERVICES as SERVICES

DEFAULT_CONFIG = "etc/suite.toml"


class Options(
    plugin_options(  # type: ignore[misc]  # a base made from the declarations, at import
        SERVICES,
        "Run every service enabled in a TOML config file; every key: docs/configuration.md.",
        only_listed=False,
        config_default=DEFAULT_CONFIG,
    )
):
    """`twistd suite`: --config, the file naming every service to run."""


def makeService(options: Options, reactor: IReactorCore | None = None) -> SuiteService:
    return make_service(options, reactor)
