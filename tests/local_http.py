"""A local HTTP server for the downloaders' tests (this machine reaches no mirror): `serving(routes)`
serves {path: bytes} on 127.0.0.1, 404 for any other path, and records the paths asked for;
`without_proxies` makes urllib talk to it directly."""

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def without_proxies(monkeypatch):
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@contextlib.contextmanager
def serving(routes, unsized=()):
    """SimpleNamespace(url="http://127.0.0.1:PORT", requests=[paths asked for]) while the server runs.
    Paths in `unsized` are sent without a Content-Length (a server that does not say how much it sends)."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            if self.path not in unsized:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}", requests=requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
