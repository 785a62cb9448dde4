"""The HTTP side of `minicnn serve`: the page's three static files and a small JSON API, nothing else.

Why the standard library's ThreadingHTTPServer: the page needs four JSON routes and three files on
localhost; http.server does that with no dependency, and the checks that matter here (which paths
exist, body size, JSON validity) are a few explicit lines below rather than a framework's defaults
to audit. A thread per connection lets one slow client not stall the others; the model itself is
used under Inspector's lock.

Security, by construction:
- Static files are read from the package once, at start-up, into a dict keyed by the exact request
  path ('/', '/app.js', '/style.css'). A request path is looked up in that dict and the API's routes,
  never joined to a folder, so '/../', '%2e%2e', encoded slashes and absolute paths find nothing: 404.
- Bodies above MAX_BODY_BYTES get 413 before they are read (and the connection is closed); a POST
  without Content-Length gets 411. Bad JSON, missing fields, wrong shapes or types and NaN or
  infinite values get 400 with a one-line reason. Any other failure is a 500 with one line; the
  server keeps serving in every case.
- Bound to 127.0.0.1 by default, requests must name this server in their Host header (a web page
  elsewhere that rebinds its DNS name to 127.0.0.1 is refused). serve() warns when bound elsewhere.
- Every response forbids framing and sniffing, and the page's Content-Security-Policy allows only
  its own script and style (no inline code, no other origin), so it works offline by design.
"""

import ipaddress
import json
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs

import numpy as np

from .inspector import Inspector, RequestError

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a 512x512 drawing of 0..255 values as JSON fits
MAX_DRAWING_SIDE = 512
MAX_JSON_DEPTH = 8  # a drawing nests 3 levels deep
STATIC_FILES = {  # request path -> (file in minicnn/serve/static, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def read_static_files():
    """{request path: (bytes, content type)}, read from the package's static folder."""
    folder = resources.files("minicnn.serve") / "static"
    contents = {}
    for path, (name, content_type) in STATIC_FILES.items():
        contents[path] = ((folder / name).read_bytes(), content_type)
    return contents


class BadRequest(ValueError):
    """A request the server refuses before it reaches the model: (status, one-line reason)."""

    def __init__(self, message, status=HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


# ----- checking what a request sends -------------------------------------------------------------------

def json_depth(value, limit):
    """Raise BadRequest when lists and dicts nest deeper than `limit` (checked iteratively, no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                raise BadRequest(f"the JSON nests deeper than {limit} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def parse_json(body):
    """The request body as a JSON object (dict), or BadRequest saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    try:
        request = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequest(f"malformed JSON: {error}") from None
    except ValueError:  # an integer of more digits than int() converts (sys.get_int_max_str_digits)
        raise BadRequest("the JSON holds a number with too many digits") from None
    except RecursionError:
        raise BadRequest(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(request, dict):
        raise BadRequest(f"the body must be a JSON object, got a {type(request).__name__}")
    json_depth(request, MAX_JSON_DEPTH)
    return request


def number_array(value, field, low, high, shapes=None, max_side=None):
    """A JSON list of lists of numbers as a float32 array, or BadRequest naming `field` and the problem.

    shapes: the accepted shapes (None: any 2-d shape with sides up to max_side). Values must be real
    numbers (not booleans, strings or null), finite, and in [low, high].
    """
    if not isinstance(value, list):
        raise BadRequest(f"'{field}' must be a list of rows of numbers, got {type(value).__name__}")
    try:
        array = np.array(value)
    except ValueError:  # rows of different lengths
        raise BadRequest(f"'{field}' has rows of different lengths") from None
    if array.dtype.kind not in "iuf":
        kind = {"b": "true/false", "U": "strings", "O": "nulls or nested objects"}.get(array.dtype.kind, array.dtype)
        raise BadRequest(f"'{field}' must hold numbers only; it holds {kind}")
    if shapes is not None and array.shape not in shapes:
        raise BadRequest(f"'{field}' must have shape {' or '.join(map(str, shapes))}, got {array.shape}")
    if shapes is None and (array.ndim != 2 or min(array.shape) < 1 or max(array.shape) > max_side):
        raise BadRequest(f"'{field}' must be rows x columns with sides from 1 to {max_side}, got shape {array.shape}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise BadRequest(f"'{field}' holds NaN or infinite values")
    if array.min() < low or array.max() > high:
        raise BadRequest(f"'{field}' values must lie in [{low}, {high}], found {array.min():g} .. {array.max():g}")
    return array.astype(np.float32)


def is_whole_number(text):
    """True for ASCII digits only: str.isdigit() also takes '²', which int() refuses (a 500, not a 400)."""
    return text.isascii() and text.isdigit()


def flag(request, field, default):
    value = request.get(field, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{field}' must be true or false, got {value!r}")
    return value


def predict_arguments(request):
    """The keyword arguments of Inspector.predict from a /api/predict request body."""
    unknown = sorted(set(request) - {"pixels", "drawing", "activations", "saliency", "layer"})
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; a request has 'pixels' or 'drawing', and optionally "
                         "'activations', 'saliency', 'layer'")
    if ("pixels" in request) == ("drawing" in request):
        raise BadRequest("send exactly one of 'pixels' (28x28 values in [0, 1]) and 'drawing' (a grey picture, "
                         "values 0..255)")
    arguments = {"activations": flag(request, "activations", True), "saliency": flag(request, "saliency", True)}
    layer = request.get("layer")
    if layer is not None and not isinstance(layer, str):
        raise BadRequest(f"'layer' must be a layer's name (a string), got {layer!r}")
    arguments["layer"] = layer
    if "pixels" in request:
        arguments["pixels"] = number_array(request["pixels"], "pixels", 0, 1, shapes=[(28, 28), (1, 28, 28)])
    else:
        arguments["drawing"] = number_array(request["drawing"], "drawing", 0, 255, max_side=MAX_DRAWING_SIDE)
    return arguments


# ----- the handler -------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """Routes: GET the static files, GET /api/summary, GET /api/test-image?kind=random|misclassified|index
    [&index=N], GET /api/filter?layer=NAME&channel=K, POST /api/predict. Everything else is 404."""

    server_version = "minicnn-serve"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's throttled requests reuse one connection
    timeout = 60  # seconds a connection may sit idle or trickle a request before its thread lets it go

    def log_message(self, format, *args):  # one line per request would drown the address line
        pass

    # ----- responses ---------------------------------------------------------------------------------
    def send(self, status, body, content_type, extra_headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for name, value in extra_headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, value, status=HTTPStatus.OK):
        self.send(status, json.dumps(value, allow_nan=False).encode("utf-8"), "application/json")

    def send_error_line(self, status, message):
        """An error as {"error": one line}: what a script shows and the page prints."""
        self.send_json({"error": " ".join(str(message).split())}, status)

    # ----- routing -----------------------------------------------------------------------------------
    def route(self, method):
        try:
            self.body = None
            if method == "POST":
                self.body = self.read_body()  # first, so that no error leaves an unread body on the connection
            elif self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # a body nobody reads: end the connection after the answer
            if not self.host_allowed():
                raise BadRequest("this server answers only requests addressed to it (Host header)",
                                 HTTPStatus.FORBIDDEN)
            path, _, query = self.path.partition("?")
            routes = {("GET", "/api/summary"): self.summary, ("GET", "/api/test-image"): self.test_image,
                      ("GET", "/api/filter"): self.filter_weights, ("POST", "/api/predict"): self.predict}
            if (method, path) in routes:
                routes[method, path](query)
            elif method in ("GET", "HEAD") and path in self.server.static_files:
                body, content_type = self.server.static_files[path]
                headers = [("Content-Security-Policy", CONTENT_SECURITY_POLICY)] if content_type.startswith("text/html") else []
                self.send(HTTPStatus.OK, body, content_type, headers)
            elif any(key[1] == path for key in routes):
                raise BadRequest(f"{path} does not take {method}", HTTPStatus.METHOD_NOT_ALLOWED)
            else:
                raise BadRequest("not found", HTTPStatus.NOT_FOUND)
        except (BadRequest, RequestError) as error:
            self.send_error_line(error.status, error)
        except Exception as error:  # a bug: say so in one line, keep serving, leave the details on stderr
            traceback.print_exc(file=sys.stderr)
            self.send_error_line(HTTPStatus.INTERNAL_SERVER_ERROR,
                                 f"internal error: {type(error).__name__}: {error}".splitlines()[0])

    def do_GET(self):
        self.route("GET")

    def do_HEAD(self):
        self.route("HEAD")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def host_allowed(self):
        allowed = self.server.allowed_hosts
        return allowed is None or (self.headers.get("Host") or "").lower() in allowed

    def read_body(self):
        """The request body, within MAX_BODY_BYTES (413 above it, 411 without a length)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise BadRequest("send the body with a Content-Length, not chunked", HTTPStatus.LENGTH_REQUIRED)
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise BadRequest("a POST needs a Content-Length", HTTPStatus.LENGTH_REQUIRED)
        if not is_whole_number(length.strip()):
            self.close_connection = True
            raise BadRequest(f"Content-Length must be a whole number, got {length!r}")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise BadRequest(f"the body is {int(length):,} bytes; the limit is {MAX_BODY_BYTES:,}",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            self.close_connection = True
            raise BadRequest(f"the body ended after {len(body)} of {length} bytes")
        return body

    @staticmethod
    def query_values(query, allowed):
        try:
            values = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8)
        except ValueError as error:
            raise BadRequest(f"malformed query string: {error}") from None
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; this route takes {sorted(allowed)}")
        return {name: value[-1] for name, value in values.items()}

    @staticmethod
    def integer(text, name):
        if text is None or not is_whole_number(text) or len(text) > 9:
            raise BadRequest(f"'{name}' must be a whole number, got {text!r}")
        return int(text)

    # ----- the API -----------------------------------------------------------------------------------
    def summary(self, query):
        self.query_values(query, ())
        self.send_json(self.server.inspector.summary())

    def predict(self, query):
        self.query_values(query, ())
        arguments = predict_arguments(parse_json(self.body))
        self.send_json(self.server.inspector.predict(**arguments))

    def test_image(self, query):
        values = self.query_values(query, ("kind", "index"))
        kind = values.get("kind", "index" if "index" in values else "random")
        index = self.integer(values["index"], "index") if "index" in values else None
        self.send_json(self.server.inspector.test_image(kind, index))

    def filter_weights(self, query):
        values = self.query_values(query, ("layer", "channel"))
        if "layer" not in values:
            raise BadRequest("give the Conv2D layer's name: /api/filter?layer=NAME&channel=K")
        self.send_json(self.server.inspector.filters(values["layer"], self.integer(values.get("channel"), "channel")))


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with the inspector, the static files and the Host names it answers to."""

    daemon_threads = True  # a client that keeps its connection open does not hold up shutdown
    allow_reuse_address = True  # restarting right after Ctrl-C finds the port free

    def __init__(self, address, inspector):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(address, Handler)
        self.inspector = inspector
        self.static_files = read_static_files()
        self.allowed_hosts = host_names(host, self.server_address[1]) if is_loopback(host) else None

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


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


def make_server(inspector, host="127.0.0.1", port=8000):
    """A Server bound to (host, port) for `inspector` (port 0: a free one); call serve_forever() on it."""
    if not isinstance(inspector, Inspector):
        raise TypeError(f"make_server: expected an Inspector, got {type(inspector).__name__}")
    return Server((host, port), inspector)


def serve(checkpoint, host="127.0.0.1", port=8000, dataset=None, out=sys.stdout, ready=None):
    """Open `checkpoint` (a .npz, a run folder or an .onnx file) and serve its page until Ctrl-C.

    Prints the address (and a warning when bound to an address other people may reach); returns 0
    after a clean shutdown. ready: an optional threading.Event set once the server listens.
    """
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
