"""Starting `minicnn serve`: the page's application (app.py) on waitress (waitress_server.py, the `serve` extra).

    server = make_server(Inspector.open("runs/latest/best.npz"), "127.0.0.1", 0)   # port 0: a free one
    serve_in_thread(server); ...; server.shutdown(); server.server_close()         # tests and notebooks
    serve("runs/latest/best.npz")                                                 # the command: until Ctrl-C

Bound to 127.0.0.1 by default; a loopback server answers only requests whose Host header names it (a web
page elsewhere that rebinds its DNS name to 127.0.0.1 is refused). serve() warns when bound elsewhere.
"""

import importlib.util
import ipaddress
import sys
import threading

from .app import MAX_BODY_BYTES, MAX_DRAWING_SIDE, MAX_TARGET_BYTES, App
from .inspector import Inspector

MISSING_WAITRESS = 'the server needs waitress, the `serve` extra: python3 -m pip install -e ".[serve]"'

__all__ = ["MAX_BODY_BYTES", "MAX_DRAWING_SIDE", "MAX_TARGET_BYTES", "MISSING_WAITRESS", "make_server",
           "require_waitress", "serve", "serve_in_thread"]


def is_loopback(host):
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_names(host, port):
    """The Host headers that name a loopback server: its own address, localhost and 127.0.0.1, with the port."""
    names = {host.lower(), "localhost", "127.0.0.1", "[::1]"}
    names.add(f"[{host}]" if ":" in host else host)
    return {f"{name}:{port}" for name in names} | ({name for name in names} if port == 80 else set())


def require_waitress():
    """Raise ImportError with one line naming the `serve` extra when waitress is not installed."""
    if importlib.util.find_spec("waitress") is None:
        raise ImportError(MISSING_WAITRESS)


def make_server(inspector, host="127.0.0.1", port=8000):
    """A waitress Server bound to (host, port) for `inspector` (port 0: a free one); call serve_forever() on it.

    Raises ImportError with one line naming the `serve` extra when waitress is not installed.
    """
    if not isinstance(inspector, Inspector):
        raise TypeError(f"make_server: expected an Inspector, got {type(inspector).__name__}")
    require_waitress()
    from .waitress_server import Server

    app = App(inspector)
    server = Server(app, host, port)
    if is_loopback(host):
        app.allowed_hosts = host_names(host, server.server_address[1])
    return server


def serve(checkpoint, host="127.0.0.1", port=8000, dataset=None, out=sys.stdout, ready=None):
    """Open `checkpoint` (a .npz, a run folder or an .onnx file) and serve its page until Ctrl-C.

    Prints the address (and a warning when bound to an address other people may reach); returns 0
    after a clean shutdown. ready: an optional threading.Event set once the server listens.
    Without waitress (the `serve` extra), raises ImportError with one line saying how to install it.
    """
    require_waitress()  # before the model is read: the one line comes at once
    inspector = Inspector.open(checkpoint, dataset)
    server = make_server(inspector, host, port)
    if not is_loopback(host):
        print(f"warning: minicnn serve is bound to {host}, so anyone who can reach this machine can use the "
              "page and its API (there is no login); use --host 127.0.0.1 to keep it to this computer",
              file=sys.stderr, flush=True)
    summary = inspector.summary()
    if not summary["supported"]:
        print(f"note: {summary['message']}", file=sys.stderr, flush=True)
    print(f"minicnn serve: {inspector.name} at {server.url} (Ctrl-C stops)", file=out, flush=True)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("minicnn serve: stopped", file=out, flush=True)
    finally:
        server.server_close()
    return 0


def serve_in_thread(server):
    """Start server.serve_forever() in a daemon thread (for tests and notebooks); returns the thread.
    Stop it with server.shutdown(); server.server_close()."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread
