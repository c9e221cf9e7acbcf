"""
The one door to Twisted's private code.  Everything in the suite that
relies on a Twisted name outside its public API lives in this package;
everything else uses public API only.

  streams.py    write-through stream transports (`FileDescriptor._tempDataLen`,
                `.dataBuffer`, `._writeDisconnected`, `tcp.Server.repstr`,
                `tcp.Port._realPortNumber`), and the accept loop that refuses at
                the descriptor limit and accepts the backlog at close
                (replaces `tcp.Port.doRead`; `_buildAddr`, `_fromListeningDescriptor`)
                `close_shared`: a port whose socket worker processes share, closed
                without `shutdown()` (`tcp._SocketCloser._shouldShutdown`), a
                worker's Unix port closed without removing the path (`._bindPath`, 26.4: `.port`)
  datagrams.py  the batched UDP read and `reply` (replaces `udp.Port.doRead`;
                `udp.Port._fromListeningDescriptor`)
  dispatch.py   the epoll reactor's event dispatch without the legacy log context for
                the suite's own transports and ports (replaces `EPollReactor.doPoll`;
                `._poller`, `._selectables`, `._doReadOrWrite`, `._disconnectSelectable`)
  types.py      Twisted's private names used as types only (`IOpenSSLTrustRoot`)
  guard.py      the checks made once per process before any of it is used

Each module's docstring names the Twisted code it relies on (read in
Twisted 26.4.0 and 26.10.0) and the public route it would take if Twisted
offered one.  L{fast_path} tells whether it is in use: when a check fails,
or SUITE_STOCK_TWISTED=1 is set, the suite runs on Twisted's stock ports
and transports (slower, never wrong) and logs one warning saying why.
"""

from suite.net.twisted_internals.dispatch import install as lean_dispatch
from suite.net.twisted_internals.guard import STOCK_ENV, Decision, fast_path
from suite.net.twisted_internals.streams import close_shared

__all__ = ["STOCK_ENV", "Decision", "close_shared", "fast_path", "lean_dispatch"]
