"""The HTTP server of `minicnn serve`: waitress (the `serve` extra), set up for one model on one machine.

Why waitress: HTTP's hard parts (parsing requests strictly, framing bodies, keep-alive, a bounded thread
pool, a connection limit and a listen backlog) are what a server that many people run and audit does
better than a hand-written one; the standard library's http.server says of itself that it is not for
production. waitress is pure Python with no dependencies, parses requests itself, and refuses the
request-smuggling shapes: two Content-Length headers ('5, 5' is no number: 400), a space before a
header's colon ('Transfer-Encoding : chunked' is no header: 400), a transfer coding other than chunked
(501). It reads a whole request (within the limits below) before the application sees it.

What this module adds to waitress, and nothing else:
- two more refusals while parsing (400, and the connection closed): two Host headers (waitress would
  pass them on joined as 'a, b'), and Transfer-Encoding beside Content-Length (waitress would follow
  the transfer coding; a proxy in front might follow the length: the classic smuggling shape);
- its own error answers (400, 413, 431, 501 before the application runs) as {"error": one line} JSON,
  like every answer of the application (waitress writes them as plain text);
- no line per queued request: under load, requests wait for the model's one lock by design, and
  waitress's "Task queue depth" warning would print one line for each;
- no traceback when a client disconnects (log_socket_errors=False): a closed connection is routine;
- serve_forever(), shutdown() and server_close(), as the standard library's servers have them.

Bounds (waitress's settings): THREADS requests are handled at once (the model itself runs one at a
time, under Inspector's lock); up to CONNECTION_LIMIT connections are open at once, further clients
wait in the listen backlog (BACKLOG) and are accepted as others close, so every client is answered in
turn, none is refused with 503; a connection idle for IDLE_SECONDS is closed; request headers (with the
request line) above MAX_HEADER_BYTES get 431, bodies above MAX_BODY_BYTES 413, before they are read.
"""

import logging
import socket
import threading
from http import HTTPStatus

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from .app import MAX_BODY_BYTES, SAFETY_HEADERS, error_body

THREADS = 4
CONNECTION_LIMIT = 100
BACKLOG = 1024
IDLE_SECONDS = 60
MAX_HEADER_BYTES = 32 * 1024  # the request line and headers; the page's requests send well under 1 KiB

QUEUE_LOG = logging.getLogger("minicnn.serve.queue")  # waitress's queue warnings land here, unprinted
QUEUE_LOG.addHandler(logging.NullHandler())
QUEUE_LOG.propagate = False


class Parser(HTTPRequestParser):
    """waitress's request parser, refusing two Host headers and a body framed two ways."""

    def parse_header(self, header_plus):
        super().parse_header(header_plus)  # repeated headers are joined into one value with ', '
        if "," in self.headers.get("HOST", ""):
            raise ParsingError("the request has more than one Host header")
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("the request has both Transfer-Encoding and Content-Length")


class JsonErrorTask(ErrorTask):
    """waitress's answer to a request it refuses before the application runs, as {"error": one line} JSON."""

    def execute(self):
        error = self.request.error
        if error.code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
            message = f"the body is over the limit of {MAX_BODY_BYTES:,} bytes"
        elif error.code == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            message = f"the request line and headers are over the limit of {MAX_HEADER_BYTES:,} bytes"
        else:
            message = f"{error.reason}: {error.body}"
        body = error_body(message)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), *SAFETY_HEADERS])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    """One client connection, as waitress handles it, with the stricter parser and JSON error answers."""

    parser_class = Parser
    error_task_class = JsonErrorTask


class Workers(ThreadedTaskDispatcher):
    """waitress's thread pool, quiet about its queue (see the module's docstring)."""

    queue_logger = QUEUE_LOG


class Server(TcpWSGIServer):
    """A waitress server for one WSGI application on (host, port); port 0 takes a free one.

    serve_forever() runs it until shutdown() (from another thread) or Ctrl-C; server_close() frees the
    socket, the connections and the threads. server_address is (host, port) as bound; url its address;
    app the application.
    """

    channel_class = Channel

    def __init__(self, app, host, port):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        adjustments = Adjustments(host=host, port=port, ident="minicnn-serve", threads=THREADS,
                                  connection_limit=CONNECTION_LIMIT, backlog=BACKLOG, channel_timeout=IDLE_SECONDS,
                                  max_request_header_size=MAX_HEADER_BYTES,
                                  max_request_body_size=MAX_BODY_BYTES + 1,  # waitress refuses from this size on
                                  log_socket_errors=False, asyncore_use_poll=True)
        workers = Workers()
        workers.set_thread_count(THREADS)
        # The socket is made for the address as given ('localhost' is 127.0.0.1, as the standard library
        # binds it), rather than for each address the name resolves to.
        super().__init__(app, dispatcher=workers, adj=adjustments,
                         sockinfo=(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, (host, port)))
        self.app = app
        self.stop_requested = False
        self.stopped = threading.Event()
        self.stopped.set()

    @property
    def server_address(self):
        return self.effective_host, int(self.effective_port)

    @property
    def url(self):
        host, port = self.server_address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self, poll_interval=0.2):
        """Answer requests until shutdown() is called (or KeyboardInterrupt, which propagates)."""
        self.stopped.clear()
        try:
            while not self.stop_requested:
                wasyncore.loop(timeout=poll_interval, map=self._map, use_poll=True, count=1)
        finally:
            self.stop_requested = False
            self.stopped.set()

    def shutdown(self):
        """Stop serve_forever() running in another thread, and wait until it has returned."""
        self.stop_requested = True
        self.pull_trigger()
        self.stopped.wait()

    def server_close(self):
        """Close the listening socket and every connection, and end the worker threads."""
        self.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(self._map)
