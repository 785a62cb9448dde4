"""The page's routes as a WSGI application: the three static files and a small JSON API, nothing else.

The HTTP itself (parsing requests, framing, keep-alive, threads, connection limits) is waitress's, in
server.py; this module sees one parsed request at a time as a WSGI environ and answers it:

    app = App(inspector, allowed_hosts={"127.0.0.1:8000", "localhost:8000"})
    status, headers, body = ...  # app(environ, start_response), as any WSGI server calls it

Security, by construction:
- Static files are read from the package once, at start-up, into a dict keyed by the exact request
  path ('/', '/app.js', '/style.css'). The request target is looked up as it was sent (waitress's
  REQUEST_URI, not the decoded PATH_INFO) in that dict and the API's routes, never joined to a
  folder, so '/../', '%2e%2e', encoded slashes and absolute paths find nothing: 404.
- Bodies above MAX_BODY_BYTES get 413 (waitress refuses them before reading; the check here is for
  any other WSGI server); a POST without a length gets 411. Bad JSON, missing fields, wrong shapes or
  types and NaN or infinite values get 400 with a one-line reason. A request target over
  MAX_TARGET_BYTES gets 414, a method this server does not know 501. Any other failure is a 500 with
  one line that names no file; the details go to the server's stderr. Error bodies never name a path
  on the server's disk.
- Bound to a loopback address, requests must name this server in their Host header (a web page
  elsewhere that rebinds its DNS name to 127.0.0.1 is refused with 403); two Host headers get 400
  (waitress_server refuses them while parsing and closes the connection; this check is for other servers).
- An answer holding NaN or infinite numbers (a diverged model) gives them as null, with a 'warning'.
- Every response forbids framing and sniffing, and the page's Content-Security-Policy allows only
  its own script and style (no inline code, no other origin), so it works offline by design.
"""

import json
import sys
import traceback
from http import HTTPStatus
from importlib import resources
from urllib.parse import parse_qs, quote

import numpy as np

from .finite import non_finite_warning, replace_non_finite
from .inspector import RequestError

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a 512x512 drawing of 0..255 values as JSON fits
MAX_TARGET_BYTES = 2048  # the longest request target (path and query): the API's queries are short
MAX_DRAWING_SIDE = 512
MAX_JSON_DEPTH = 8  # a drawing nests 3 levels deep
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")  # others get 501; PUT and DELETE find no route (404/405)
STATIC_FILES = {  # request path -> (file in minicnn/serve/static, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SAFETY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                  ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store")]


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


def error_body(message):
    """An error as the bytes of {"error": one line}: what a script shows and the page prints."""
    return json.dumps({"error": " ".join(str(message).split())}).encode("utf-8")


def json_body(value):
    """An answer as JSON bytes; NaN and infinite numbers become null, with a 'warning' saying so."""
    value, non_finite = replace_non_finite(value)
    if non_finite and isinstance(value, dict):
        value["warning"] = non_finite_warning(non_finite)
    return json.dumps(value, allow_nan=False).encode("utf-8")


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


def query_values(query, allowed):
    """{name: last value} of a query string whose names are all in `allowed`, or BadRequest."""
    try:
        values = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8)
    except ValueError as error:
        raise BadRequest(f"malformed query string: {error}") from None
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}; this route takes {sorted(allowed)}")
    return {name: value[-1] for name, value in values.items()}


def integer(text, name):
    if text is None or not is_whole_number(text) or len(text) > 9:
        raise BadRequest(f"'{name}' must be a whole number, got {text!r}")
    return int(text)


def request_target(environ):
    """The path and query as the client sent them, not percent-decoded (waitress gives REQUEST_URI;
    other WSGI servers only the decoded PATH_INFO, quoted back here)."""
    target = environ.get("REQUEST_URI")
    if target is None:
        query = environ.get("QUERY_STRING", "")
        target = quote(environ.get("PATH_INFO", "")) + (f"?{query}" if query else "")
    return target


def read_body(environ):
    """The request body, within MAX_BODY_BYTES (413 above it, 411 without a length)."""
    length = environ.get("CONTENT_LENGTH") or None
    if length is None:
        raise BadRequest("a POST needs a Content-Length", HTTPStatus.LENGTH_REQUIRED)
    if not is_whole_number(length.strip()):
        raise BadRequest(f"Content-Length must be a whole number, got {length!r}")
    if int(length) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is {int(length):,} bytes; the limit is {MAX_BODY_BYTES:,}",
                         HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    body = environ["wsgi.input"].read(int(length))
    if len(body) != int(length):
        raise BadRequest(f"the body ended after {len(body)} of {length} bytes")
    return body


# ----- the application ---------------------------------------------------------------------------------

class App:
    """Routes: GET the static files, GET /api/summary, GET /api/test-image?kind=random|misclassified|index
    [&index=N], GET /api/filter?layer=NAME&channel=K, POST /api/predict. Everything else is 404.

    inspector: the Inspector whose model answers. allowed_hosts: the Host headers accepted (None: any).
    """

    def __init__(self, inspector, allowed_hosts=None):
        self.inspector = inspector
        self.allowed_hosts = allowed_hosts
        self.static_files = read_static_files()
        self.routes = {("GET", "/api/summary"): self.summary, ("GET", "/api/test-image"): self.test_image,
                       ("GET", "/api/filter"): self.filter_weights, ("POST", "/api/predict"): self.predict}

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        try:
            status, body, content_type, headers = self.respond(method, environ)
        except (BadRequest, RequestError) as error:
            status, body, content_type, headers = error.status, error_body(error), "application/json", []
        except Exception as error:  # a bug: say so in one line, keep serving, leave the details on stderr
            traceback.print_exc(file=sys.stderr)
            status, content_type, headers = HTTPStatus.INTERNAL_SERVER_ERROR, "application/json", []
            body = error_body(f"internal error ({type(error).__name__}); the details are in the server's output")
        status = HTTPStatus(status)
        start_response(f"{status.value} {status.phrase}", [("Content-Type", content_type),
                                                           ("Content-Length", str(len(body))),
                                                           *SAFETY_HEADERS, *headers])
        return [b"" if method == "HEAD" else body]

    def respond(self, method, environ):
        """(status, body bytes, content type, extra headers) for one request, or BadRequest/RequestError."""
        target = request_target(environ)
        if len(target) > MAX_TARGET_BYTES:
            raise BadRequest(f"the request target is {len(target):,} characters; the limit is {MAX_TARGET_BYTES:,}",
                             HTTPStatus.REQUEST_URI_TOO_LONG)
        if method not in METHODS:
            raise BadRequest(f"this server does not implement {method[:20]!r}; it answers {', '.join(METHODS)}",
                             HTTPStatus.NOT_IMPLEMENTED)
        host = environ.get("HTTP_HOST", "")
        if "," in host:  # repeated headers arrive joined by ', ' (waitress_server refuses them before this)
            raise BadRequest("the request has more than one Host header")
        if self.allowed_hosts is not None and host.lower() not in self.allowed_hosts:
            raise BadRequest("this server answers only requests addressed to it (Host header)", HTTPStatus.FORBIDDEN)
        path, _, query = target.partition("?")
        if (method, path) in self.routes:
            body = read_body(environ) if method == "POST" else None
            return HTTPStatus.OK, json_body(self.routes[method, path](query, body)), "application/json", []
        if method in ("GET", "HEAD") and path in self.static_files:
            body, content_type = self.static_files[path]
            headers = []
            if content_type.startswith("text/html"):
                headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
            return HTTPStatus.OK, body, content_type, headers
        if any(route_path == path for _, route_path in self.routes):
            raise BadRequest(f"{path} does not take {method}", HTTPStatus.METHOD_NOT_ALLOWED)
        raise BadRequest("not found", HTTPStatus.NOT_FOUND)

    # ----- the API: each route takes (query, body) and returns a JSON-able answer ------------------------
    def summary(self, query, body):
        query_values(query, ())
        return self.inspector.summary()

    def predict(self, query, body):
        query_values(query, ())
        return self.inspector.predict(**predict_arguments(parse_json(body)))

    def test_image(self, query, body):
        """A test image, its label and the model's prediction for it (as /api/predict answers it)."""
        values = query_values(query, ("kind", "index"))
        kind = values.get("kind", "index" if "index" in values else "random")
        index = integer(values["index"], "index") if "index" in values else None
        answer = self.inspector.test_image(kind, index)
        if not self.inspector.summary()["supported"]:  # the page shows the model's message instead
            return {**answer, "predicted": None, "prediction": None}
        images, _ = self.inspector.test_set()
        answer["prediction"] = self.inspector.predict(pixels=images[answer["index"]] / np.float32(255))
        answer.setdefault("predicted", answer["prediction"]["predicted"])  # misclassified: already found
        return answer

    def filter_weights(self, query, body):
        values = query_values(query, ("layer", "channel"))
        if "layer" not in values:
            raise BadRequest("give the Conv2D layer's name: /api/filter?layer=NAME&channel=K")
        return self.inspector.filters(values["layer"], integer(values.get("channel"), "channel"))
