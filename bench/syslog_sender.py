"""
The messages of the collector benchmarks, and the sender of bench/run.py's
collector loads: COUNT numbered RFC 5424 messages of 100 bytes to
127.0.0.1:PORT.

usage: syslog_sender.py PORT COUNT CONNECTIONS MODE
  MODE lf: LF-terminated frames over TCP; octet: octet-counted frames (RFC
  6587) over TCP; tls: octet-counted frames over TLS (RFC 5425, the server's
  certificate not checked); udp: one message a datagram (CONNECTIONS ignored).

Message n goes over connection n % CONNECTIONS, each connection sending its
share with one sendall from its own thread.  The frames are built first;
"ready" on stdout says the sending starts, so the caller's clock starts there.
"""

import socket
import ssl
import sys
import threading


def syslog_message(n: int) -> bytes:
    head = b"<13>1 2026-11-20T21:39:31.334991Z bench app - - - message %08d " % n
    return head + b"x" * (99 - len(head)) + b"\n"


def octet_counted(n: int) -> bytes:
    """Message N as an octet-counted frame (RFC 6587), as rsyslog's omfwd and RFC 5425 send it."""
    message = syslog_message(n)[:-1]
    return b"%d %s" % (len(message), message)


def main() -> None:
    port, count, connections, mode = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
    )
    address = ("127.0.0.1", port)
    frame = syslog_message if mode in ("lf", "udp") else octet_counted
    if mode == "udp":
        messages = [frame(n) for n in range(count)]
        print("ready", flush=True)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for message in messages:
            sender.sendto(message, address)
        return
    shares = [b"".join(frame(n) for n in range(k, count, connections)) for k in range(connections)]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    def send(share: bytes) -> None:
        with socket.create_connection(address) as plain:
            if mode == "tls":
                with context.wrap_socket(plain) as secure:
                    secure.sendall(share)
                    # Closed with unread data (TLS 1.3 session tickets), a
                    # socket resets the connection, and the server's kernel
                    # drops what the server has not read yet: so the end is
                    # a half-close, and the server's data read until it closes.
                    secure.shutdown(socket.SHUT_WR)
                    while True:
                        try:
                            if not secure.recv(65536):
                                break
                        except (ssl.SSLError, OSError):
                            break
            else:
                plain.sendall(share)
                plain.shutdown(socket.SHUT_WR)
                while plain.recv(65536):
                    pass

    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    print("ready", flush=True)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
