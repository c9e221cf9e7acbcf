"""How peers and bound addresses are written in logs and records: `host:port`."""


def host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_peer(address) -> str:
    """`host:port` for IP peers, the socket path (or `unix`) for Unix ones."""
    if hasattr(address, "port"):
        return host_port(address.host, address.port)
    name = getattr(address, "name", None)
    return name.decode(errors="replace") if isinstance(name, bytes) else name or "unix"
