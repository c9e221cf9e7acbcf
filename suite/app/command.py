"""
The `suite` command: what an operator does around a running suite.

- `suite init DIR`: a working setup in DIR (the shipped config, a
  self-signed TLS pair, the directories the config writes to), so a
  `pip install` elsewhere starts in one more command.  Nothing that exists
  is overwritten.
- `suite check CONFIG`: every mistake starting would meet, one line each,
  without binding a port or touching a file the services write (as
  `rsyslogd -N1` and `consul validate` do); exit status 1 on any.
- `suite status URL`: the /status of a running suite's [metrics] listener
  as tables: each service's health, then the registry's names.
"""

import argparse
import datetime
import ipaddress
import json
import os
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from suite.app.compose import check
from suite.app.services import SERVICES
from suite.foundation.printable import printable
from suite.foundation.version import describe_versions

CONFIG_NAME = "suite.toml"
CERTIFICATE_DAYS = 365
STATUS_TIMEOUT = 10.0


def shipped_config() -> bytes:
    """The config the suite ships: the checkout's etc/suite.toml."""
    return resources.files("suite.app").joinpath(CONFIG_NAME).read_bytes()


def self_signed_pair(host: str = "localhost") -> tuple[bytes, bytes]:
    """A PEM certificate for HOST, 127.0.0.1 and ::1, and its private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(host),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write_new(path: str, data: bytes, mode: int) -> bool:
    """Write DATA to a new file PATH with MODE; False (and nothing written) if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def init(directory: str) -> int:
    """Write what DIRECTORY lacks of a working setup; say what was written and kept."""
    os.makedirs(directory, exist_ok=True)
    config_path = os.path.join(directory, CONFIG_NAME)
    said = Said(directory)
    said.written(config_path, write_new(config_path, shipped_config(), 0o640))
    planned, problems = check(SERVICES, config_path)
    if planned is None:  # an existing file that does not parse: nothing more to go on
        return report(problems)
    tls = planned.tls_settings
    certificate, private_key = tls.certificate, tls.private_key
    if certificate and private_key and not certificate.startswith("credential:"):
        if os.path.exists(certificate) or os.path.exists(private_key):
            said.written(certificate, False)
        else:
            crt, key = self_signed_pair()
            for path in (certificate, private_key):
                os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
            said.written(private_key, write_new(private_key, key, 0o600))
            said.written(certificate, write_new(certificate, crt, 0o644))
    for path in planned.written_files:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o750, exist_ok=True)
            print(f"made {said.shown(parent)}/")
    planned, problems = check(SERVICES, config_path)
    if problems:
        return report(problems)
    print(f"start it: twistd --nodaemon --pidfile= suite --config {config_path}")
    return 0


class Said:
    """What init tells: paths inside the directory as the operator wrote it (`x/tls/…`)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.absolute = os.path.abspath(directory)

    def shown(self, path: str) -> str:
        inside = os.path.relpath(path, self.absolute)
        if inside.startswith(os.pardir):
            return path
        return os.path.join(self.directory, inside)

    def written(self, path: str, written: bool) -> None:
        shown = self.shown(path)
        print(f"wrote {shown}" if written else f"kept {shown} (it exists)")


def report(problems: Sequence[Exception]) -> int:
    for problem in problems:
        print(problem)
    return 1


def check_config(path: str, unit: str | None = None) -> int:
    if unit is not None:
        before = os.environ.get("CREDENTIALS_DIRECTORY")
        with unit_credentials(unit) as directory:
            os.environ["CREDENTIALS_DIRECTORY"] = directory
            try:
                return check_config(path)
            finally:
                if before is None:
                    del os.environ["CREDENTIALS_DIRECTORY"]
                else:
                    os.environ["CREDENTIALS_DIRECTORY"] = before
    planned, problems = check(SERVICES, path)
    if problems or planned is None:
        return report(problems)
    services = ", ".join(service.name for service in planned.services)
    print(f"{path}: ok ({services})")
    return 0


@contextmanager
def unit_credentials(unit: str) -> Iterator[str]:
    """
    A directory holding what the systemd UNIT's `LoadCredential=NAME:PATH`
    lines would hand the service (links to each PATH), for as long as the
    block runs: `credential:NAME` is then checked against the real file.
    """
    try:
        with open(unit, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SystemExit(f"suite: {unit}: {e.strerror}") from None
    with tempfile.TemporaryDirectory(prefix="suite-credentials-") as directory:
        for line in lines:
            setting, _, value = line.strip().partition("=")
            name, _, source = value.partition(":")
            if setting == "LoadCredential" and name and "/" not in name and source:
                os.symlink(source, os.path.join(directory, name))
        yield directory


def status(url: str, timeout: float) -> int:
    """Print URL's /status as tables; 0 when ok or degraded, 1 otherwise or unreachable."""
    base = url if "://" in url else f"http://{url}"
    try:
        with urllib.request.urlopen(base.rstrip("/") + "/status", timeout=timeout) as answer:
            report_body = json.load(answer)
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"{url}: {getattr(e, 'reason', e)}", file=sys.stderr)
        return 1
    for line in status_lines(report_body):
        print(line)
    return 0 if report_body.get("status") in ("ok", "degraded") else 1


def status_lines(body: dict[str, Any]) -> list[str]:
    """The tables `suite status` prints for a /status BODY; every text escaped."""
    lines = [f"{printable(str(body.get('version', 'suite')))}: {printable(str(body['status']))}"]
    rows = [("SERVICE", "STATUS", "DETAIL")]
    registry: dict[str, Any] = {}
    for name, entry in sorted(body.get("services", {}).items()):
        details = [printable(str(problem)) for problem in entry.get("problems", [])]
        if "instances" in entry:
            details.append(
                f"{counted(entry['instances'], 'instance')} of {counted(entry['names'], 'name')}, "
                f"{counted(entry.get('evictions', 0), 'eviction')}"
            )
            registry.update(entry.get("registry", {}))
        rows.append((printable(name), printable(str(entry["status"])), "; ".join(details)))
    lines += table(rows)
    if registry:
        lines.append("")
        names = [("NAME", "INSTANCES", "ADDRESSES")]
        for name, entry in sorted(registry.items()):
            shown = [printable(str(address)) for address in entry["addresses"]]
            if entry["instances"] > len(shown):
                shown.append(f"and {entry['instances'] - len(shown)} more")
            names.append((printable(name), str(entry["instances"]), " ".join(shown)))
        lines += table(names)
    return lines


def counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"suite: {message}\n")


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="suite", description="Set up, check and look at the suite.")
    top.add_argument("--version", action="version", version=describe_versions())
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    made = commands.add_parser(
        "init",
        help="write a working config, a self-signed TLS pair and the directories into DIR",
        description="Write DIR/suite.toml (the shipped config), a self-signed TLS pair "
        "DIR/tls/server.crt and server.key, and the directories the config writes to. "
        "Nothing that exists is overwritten.",
    )
    made.add_argument("directory", metavar="DIR")
    checked = commands.add_parser(
        "check",
        help="check a config file without starting anything",
        description="Check CONFIG as starting would (every key, listener, file and "
        "credential) without binding a port or writing a file: one line per mistake and "
        "exit status 1 on any; `CONFIG: ok (services)` and 0 otherwise.",
    )
    checked.add_argument("config", metavar="CONFIG")
    checked.add_argument(
        "--unit",
        metavar="FILE",
        help="read credential:NAME as the systemd unit FILE's LoadCredential=NAME:PATH would "
        "hand it to the service (check as root a config the service reads)",
    )
    shown = commands.add_parser(
        "status",
        help="show a running suite's health and registry",
        description="Print the health of each service and the registry's names from URL, "
        "the [metrics] listener of a running suite (e.g. http://127.0.0.1:9100). Exit status "
        "0 when it is ok or degraded, 1 when failing, stopping or unreachable.",
    )
    shown.add_argument("url", metavar="URL")
    shown.add_argument("--timeout", type=float, default=STATUS_TIMEOUT, help="seconds (10)")
    return top


def console() -> NoReturn:
    """The `suite` console script: `suite init DIR | head` ends quietly when head has enough."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()


def main(argv: list[str] | None = None) -> NoReturn:
    args = parser().parse_args(argv)
    if args.command == "init":
        sys.exit(init(args.directory))
    if args.command == "check":
        sys.exit(check_config(args.config, args.unit))
    sys.exit(status(args.url, args.timeout))
