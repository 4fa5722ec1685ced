"""A gunicorn worker for clients that reach it directly: request heads are read without a thread.

gunicorn's sync worker gives a connection its whole process from the first byte, and the
threaded worker a thread: a client sending its headers a byte at a time holds either. This
worker (gthread underneath) collects each request head in its event loop and hands the
connection to a thread only once the head is complete; a head still incomplete after
HEAD_TIMEOUT seconds is dropped. `make run` serves with it. Behind nginx, which buffers
whole requests itself, the sync workers of deploy/gunicorn.conf.py are enough.
"""

import contextlib
import errno
import selectors
import time
from collections import deque
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

HEAD_TIMEOUT = 15.0
# Past this a head is handed over as it is, for gunicorn's own limits to refuse.
HEAD_LIMIT = 1024 * 1024
HEAD_END = b"\r\n\r\n"


class HeadFirstWorker(ThreadWorker):
    """gthread, with each request head read in the event loop before a thread takes it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.heads: deque[TConn] = deque()  # oldest first, so also by deadline

    def _reads_heads(self) -> bool:
        # TLS, HTTP/2 prior knowledge and other protocols start with their own handshake.
        cfg = self.cfg
        return (
            not cfg.is_ssl
            and getattr(cfg, "protocol", "http") == "http"
            and getattr(cfg, "proxy_protocol", "off") in ("off", False, None)
            and getattr(cfg, "http2_cleartext", None) not in ("prior-knowledge", "both")
        )

    def accept(self, listener):
        if not self._reads_heads():
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._collect_head(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection's next request: collect its head too."""
        if not self._reads_heads():
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._collect_head(conn)

    def _collect_head(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        conn.head = bytearray()
        conn.head_deadline = time.monotonic() + HEAD_TIMEOUT
        self.heads.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_head, conn))

    def _read_head(self, conn: TConn, _sock) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_head(conn)
            return
        searched = len(conn.head)
        conn.head += data
        # Blank lines before a request line are skipped by the parser, so they end nothing.
        start = len(conn.head) - len(conn.head.lstrip(b"\r\n"))
        if conn.head.find(HEAD_END, max(start, searched - 3)) < 0 and len(conn.head) < HEAD_LIMIT:
            return
        self.poller.unregister(conn.sock)
        self.heads.remove(conn)
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(bytes(conn.head))
        conn.head = None
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop_head(self, conn: TConn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):  # closed already
            self.poller.unregister(conn.sock)
        self.heads.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        """Also drop heads past their deadline, and every unfinished head once stopping."""
        super().murder_pending()
        now = time.monotonic()
        while self.heads and (not self.alive or self.heads[0].head_deadline <= now):
            self._drop_head(self.heads[0])
