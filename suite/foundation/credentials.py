"""
Secrets from files: `credential:NAME` names the file NAME in
$CREDENTIALS_DIRECTORY, where systemd's LoadCredential= puts a private copy
of a root-only file for the service (which runs as a DynamicUser and could
not read the original); a token may also come from a file of its own.
"""

import os
from collections.abc import Mapping
from typing import Any, Protocol

from suite.foundation.config import CREDENTIAL, ConfigError


class TokenSettings(Protocol):
    """The settings of a section that takes a token: the announcer's and the name server's."""

    @property
    def token(self) -> str: ...

    @property
    def token_file(self) -> str: ...

    def error(self, name: str, problem: str, value: Any = None) -> ConfigError: ...


def credential_path(value: str, environ: Mapping[str, str] = os.environ) -> str:
    """
    VALUE, or for `credential:NAME` the path of NAME in $CREDENTIALS_DIRECTORY
    (ValueError if unusable).
    """
    if not value.startswith(CREDENTIAL):
        return value
    name = value.removeprefix(CREDENTIAL)
    if not name or "/" in name:
        raise ValueError("credential:NAME needs a file name")
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ValueError("$CREDENTIALS_DIRECTORY is not set (systemd sets it for LoadCredential=)")
    return os.path.join(directory, name)


def read_secret(path: str) -> str:
    """The secret held in PATH (or `credential:NAME`), without its final line end."""
    try:
        with open(credential_path(path), encoding="utf-8") as f:
            secret = f.read().rstrip("\r\n")
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if not secret:
        raise ValueError("the file is empty")
    return secret


def resolve_token(settings: TokenSettings) -> str:
    """SETTINGS' token: given in clear, or read from `token_file` or `credential:NAME`."""
    if settings.token and settings.token_file:
        raise settings.error("token_file", "set token or token_file, not both")
    if settings.token_file:
        source, path = "token_file", settings.token_file
    elif settings.token.startswith(CREDENTIAL):
        source, path = "token", settings.token
    else:
        return settings.token
    try:
        return read_secret(path)
    except ValueError as e:
        raise settings.error(source, str(e)) from None
