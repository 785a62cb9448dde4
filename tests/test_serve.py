"""minicnn serve: the JSON API against a real server on a free port of 127.0.0.1, its security cases,
concurrent requests, and the command (start, address line, Ctrl-C) in a subprocess.

Tests that need the server skip without waitress (the `serve` extra), those that prepare drawings
without Pillow (the `images` extra), each saying which extra to install."""

import contextlib
import http.client
import json
import logging
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import models, nn
from minicnn.checkpoint import save_checkpoint
from minicnn.pictures import prepare, softmax
from minicnn.serve import (MAX_BODY_BYTES, MAX_TARGET_BYTES, Inspector, decode_maps, make_server, non_finite_warning,
                           replace_non_finite, serve, serve_in_thread)
from minicnn.serve.server import MISSING_WAITRESS
from minicnn.tensor import Tensor, no_grad
from minicnn.viz.saliency import grad_cam, saliency_map

ROOT = Path(__file__).resolve().parents[1]
MISSING_PILLOW = 'drawings are prepared with Pillow, the `images` extra: python3 -m pip install -e ".[images]"'


def needs_waitress():
    pytest.importorskip("waitress", reason=MISSING_WAITRESS)


def needs_pillow():
    pytest.importorskip("PIL", reason=MISSING_PILLOW)


def small_model():
    """A quick 1x28x28 CNN: two convolutions, a pool and a dense layer (untrained)."""
    minicnn.manual_seed(0)
    return nn.Sequential(nn.Conv2D(1, 4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(4, 6, 3), nn.ReLU(), nn.Flatten(),
                         nn.Dense(6 * 11 * 11, 10), input_shape=(1, 28, 28))


def synthetic_test_set(count=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=count)


class Client:
    """Raw HTTP requests to a server: the path is sent exactly as given (no normalisation)."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            headers = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            if data is not None and "Content-Length" not in headers:
                headers["Content-Length"] = str(len(data))
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            if data is not None:
                connection.send(data)
            response = connection.getresponse()
            content = response.read()
            return response.status, response.getheader("Content-Type", ""), content
        finally:
            connection.close()

    def json(self, method, path, body=None, headers=None):
        status, _, content = self.request(method, path, body, headers)
        return status, json.loads(content)


@pytest.fixture(scope="module")
def model():
    return small_model()


@contextlib.contextmanager
def running_server(inspector):
    """A server for `inspector` on a free port of 127.0.0.1, running in a thread while the block runs."""
    needs_waitress()
    running = make_server(inspector, "127.0.0.1", 0)
    serve_in_thread(running)
    try:
        yield running
    finally:
        running.shutdown()
        running.server_close()


@pytest.fixture(scope="module")
def server(model):
    inspector = Inspector(model, dataset="mnist", name="small.npz", test_images=synthetic_test_set())
    with running_server(inspector) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return Client(server.server_address[1])


def forward(model, image):
    """The model's logits and every layer's output for one (28, 28) image, without any hook."""
    x = Tensor(image.reshape(1, 1, 28, 28).astype(np.float32))
    outputs = []
    with no_grad():
        for layer in model.layers:
            x = layer(x)
            outputs.append(x.numpy()[0])
    return outputs[-1][None], outputs


# ----- the API ------------------------------------------------------------------------------------------

def test_the_page_and_its_files_are_served_with_a_content_security_policy(client):
    status, content_type, page = client.request("GET", "/")
    assert status == 200 and content_type.startswith("text/html")
    assert b'src="/app.js"' in page and b'href="/style.css"' in page
    assert b"http" not in page.replace(b"http-equiv", b"")  # no CDN: nothing from another origin
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, content_type, _ = client.request("GET", path)
        assert status == 200 and content_type.startswith(kind)


def test_summary_lists_layers_shapes_and_parameters(client, model):
    status, summary = client.json("GET", "/api/summary")
    assert status == 200 and summary["supported"] and summary["input_shape"] == [1, 28, 28]
    assert [layer["name"] for layer in summary["layers"]] == [f"{i} {type(layer).__name__}"
                                                            for i, layer in enumerate(model.layers)]
    assert [layer["output_shape"] for layer in summary["layers"]] == [
        [4, 26, 26], [4, 26, 26], [4, 13, 13], [6, 11, 11], [6, 11, 11], [726], [10]]
    assert sum(layer["parameters"] for layer in summary["layers"]) == summary["total_parameters"] == \
        sum(parameter.numel() for parameter in model.parameters())
    assert summary["classes"] == [str(digit) for digit in range(10)]
    assert summary["grad_cam_default"] == "4 ReLU"
    assert summary["layers"][2]["filter_layer"] == "0 Conv2D" and summary["layers"][5]["filter_layer"] is None


def test_predict_returns_the_models_probabilities_layers_saliency_and_grad_cam(client, model):
    image = synthetic_test_set()[0][3] / 255
    status, answer = client.json("POST", "/api/predict", {"pixels": image.tolist(), "layer": "1 ReLU"})
    assert status == 200
    logits, outputs = forward(model, image)
    np.testing.assert_allclose(answer["probabilities"], softmax(logits)[0], atol=1e-6)
    assert answer["predicted"] == int(np.argmax(logits)) and answer["class"] == str(answer["predicted"])
    np.testing.assert_allclose(answer["input"], image, atol=1e-4)
    assert [layer["name"] for layer in answer["layers"]] == [f"{i} {type(layer).__name__}"
                                                           for i, layer in enumerate(model.layers)]
    for layer, expected in zip(answer["layers"], outputs):
        if layer["kind"] == "maps":
            assert layer["shape"] == list(expected.shape)
            spread = expected.max() - expected.min()
            np.testing.assert_allclose(decode_maps(layer), expected, atol=spread / 255 * 0.51 + 1e-6)
        else:
            np.testing.assert_allclose(layer["values"], expected, atol=1e-5)
    _, expected_saliency = saliency_map(model, image)
    np.testing.assert_allclose(decode_maps(answer["saliency"]), expected_saliency,
                               atol=expected_saliency.max() / 255 * 0.51 + 1e-9)
    _, expected_cam = grad_cam(model, image, layer="1 ReLU")
    assert answer["grad_cam"]["layer"] == "1 ReLU" and answer["grad_cam"]["map_shape"] == [26, 26]
    np.testing.assert_allclose(decode_maps(answer["grad_cam"]), expected_cam, atol=1 / 255 * 0.51 + 1e-9)


def test_a_drawing_is_prepared_as_mnist_digits_were_and_can_skip_the_extras(client):
    needs_pillow()
    drawing = np.zeros((112, 112))
    drawing[20:95, 50:60] = 255  # a "1"
    status, answer = client.json("POST", "/api/predict",
                                 {"drawing": drawing.astype(int).tolist(), "activations": False, "saliency": False})
    assert status == 200 and "layers" not in answer and "saliency" not in answer
    np.testing.assert_allclose(answer["input"], prepare(drawing.astype(np.uint8)), atol=1e-4)


def test_test_images_random_by_index_and_misclassified(client, model):
    images, labels = synthetic_test_set()
    status, image = client.json("GET", "/api/test-image?index=5")
    assert status == 200 and image["label"] == labels[5] and image["class"] == str(labels[5])
    np.testing.assert_allclose(image["pixels"], images[5] / 255, atol=1e-4)
    status, image = client.json("GET", "/api/test-image?kind=random")
    assert status == 200 and 0 <= image["index"] < len(images)
    status, wrong = client.json("GET", "/api/test-image?kind=misclassified")
    logits, _ = forward(model, images[wrong["index"]] / 255)
    assert status == 200 and wrong["predicted"] == int(np.argmax(logits)) != wrong["label"]
    assert client.json("GET", "/api/test-image?index=12")[0] == 400


def test_filter_gives_one_filters_weights(client, model):
    status, answer = client.json("GET", "/api/filter?layer=3%20Conv2D&channel=2")
    assert status == 200 and answer["shape"] == [4, 3, 3]
    np.testing.assert_allclose(answer["values"], model.layers[3].weight.numpy()[2], atol=1e-5)
    assert client.json("GET", "/api/filter?layer=1%20ReLU&channel=0")[0] == 400
    assert client.json("GET", "/api/filter?layer=0%20Conv2D&channel=4")[0] == 400


# ----- security --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/../pyproject.toml", "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%2E%2E%2Fpyproject.toml",
    "/..%2f..%2fetc%2fpasswd", "/static/app.js", "/static/../app.js", "//etc/passwd", "/etc/passwd",
    "/app.js/..", "/./app.js", "/app.js%00", "/%2fapp.js", "/inspector.py", "/__init__.py", "/server.py",
    "/minicnn/serve/server.py", "/api/../app.js", "/api/summary/", "/API/SUMMARY", "http://127.0.0.1/../etc/passwd",
    "/..\\..\\etc\\passwd", "/index.html/", "/%69ndex.html",
])
def test_no_request_path_reaches_the_file_system(client, path):
    status, _, content = client.request("GET", path)
    assert status == 404 and json.loads(content) == {"error": "not found"}


def bad_requests():
    nan_pixels = "[" + ",".join(["[" + ",".join(["NaN"] + ["0"] * 27) + "]"] + ["[" + ",".join(["0"] * 28) + "]"] * 27) + "]"
    infinite = nan_pixels.replace("NaN", "Infinity")
    huge = nan_pixels.replace("NaN", "1e999")
    rows = [[0.0] * 28 for _ in range(28)]
    return {
        "malformed JSON": b'{"pixels": [[0, 1]',
        "not UTF-8": b'{"pixels": "\xff"}',
        "not an object": b"[1, 2, 3]",
        "neither field": {},
        "both fields": {"pixels": rows, "drawing": rows},
        "unknown field": {"pixels": rows, "extra": 1},
        "wrong shape": {"pixels": [[0.0] * 27 for _ in range(28)]},
        "flat list": {"pixels": [0.0] * 784},
        "ragged rows": {"pixels": rows[:27] + [[0.0] * 5]},
        "strings": {"pixels": [["0"] * 28 for _ in range(28)]},
        "booleans": {"pixels": [[False] * 28 for _ in range(28)]},
        "nulls": {"pixels": [[None] * 28 for _ in range(28)]},
        "a number, not rows": {"pixels": 3},
        "NaN": f'{{"pixels": {nan_pixels}}}'.encode(),
        "Infinity": f'{{"pixels": {infinite}}}'.encode(),
        "1e999": f'{{"pixels": {huge}}}'.encode(),
        "out of range": {"pixels": [[2.0] * 28 for _ in range(28)]},
        "negative": {"pixels": [[-0.5] * 28 for _ in range(28)]},
        "drawing too large": {"drawing": [[0] * 600 for _ in range(2)]},
        "drawing 3-d": {"drawing": [[[0, 0]]]},
        "drawing empty": {"drawing": [[]]},
        "flag not a boolean": {"pixels": rows, "saliency": "yes"},
        "layer not a string": {"pixels": rows, "layer": 3},
        "layer without maps": {"pixels": rows, "layer": "5 Flatten"},
        "layer unknown": {"pixels": rows, "layer": "no such layer"},
        "deep nesting": b'{"pixels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "a number of 5000 digits": b'{"pixels": 1' + b"0" * 5000 + b"}",
    }


@pytest.mark.parametrize("case", list(bad_requests()))
def test_bad_requests_get_400_with_one_line_and_the_server_keeps_serving(client, case):
    status, content_type, content = client.request("POST", "/api/predict", bad_requests()[case])
    assert status == 400 and content_type == "application/json"
    reason = json.loads(content)["error"]
    assert reason and "\n" not in reason and len(reason) < 300
    assert client.json("GET", "/api/summary")[0] == 200


def test_a_body_over_the_limit_gets_413_before_it_is_read(client):
    # Only the headers are sent: the answer comes without the body being read (a client still sending
    # a large body when the server closes may see its connection reset, so none is sent here).
    status, _, content = client.request("POST", "/api/predict", b"", headers={"Content-Length": str(MAX_BODY_BYTES + 1)})
    assert status == 413 and "limit" in json.loads(content)["error"]
    assert client.json("GET", "/api/summary")[0] == 200


def test_wrong_methods_lengths_queries_and_hosts_are_refused(client):
    assert client.request("GET", "/api/predict")[0] == 405
    assert client.request("POST", "/api/summary", b"{}")[0] == 405
    assert client.request("DELETE", "/")[0] == 404
    assert client.request("POST", "/api/predict", b"{}", headers={"Content-Length": "x"})[0] == 400
    assert client.request("GET", "/api/summary?debug=1")[0] == 400
    assert client.request("GET", "/api/test-image?index=-1")[0] == 400
    # '\u00b2' (superscript two) passes str.isdigit() but not int(): 400, not 500.
    assert client.request("POST", "/api/predict", b"{}", headers={"Content-Length": "\u00b2"})[0] == 400
    assert client.request("GET", "/api/test-image?index=%C2%B2")[0] == 400
    assert client.request("GET", "/api/test-image?kind=everything")[0] == 400
    # A page elsewhere whose DNS name was rebound to 127.0.0.1 sends its own name as Host.
    assert client.request("GET", "/api/summary", headers={"Host": "attacker.example:80"})[0] == 403
    assert client.request("GET", "/api/summary", headers={"Host": f"localhost:{client.port}"})[0] == 200


def test_a_post_without_content_length_gets_411(client):
    connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    connection.putrequest("POST", "/api/predict")
    connection.endheaders()
    assert connection.getresponse().status == 411
    connection.close()


def test_concurrent_requests_get_their_own_answers(client, model):
    images = synthetic_test_set(8, seed=1)[0] / 255
    expected = [softmax(forward(model, image)[0])[0] for image in images]
    layer_sums = [forward(model, image)[1][0].sum() for image in images]
    failures = []
    start = threading.Barrier(len(images))

    def ask(index):
        start.wait()
        for _ in range(4):
            status, answer = client.json("POST", "/api/predict", {"pixels": images[index].tolist(), "saliency": False})
            if status != 200 or not np.allclose(answer["probabilities"], expected[index], atol=1e-6) or \
                    not math.isclose(decode_maps(answer["layers"][0]).sum(), layer_sums[index], rel_tol=0.02,
                                     abs_tol=5):
                failures.append(index)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_model_with_other_inputs_gets_a_clear_message():
    colour = nn.Sequential(nn.Conv2D(3, 2, 3), nn.Flatten(), nn.Dense(2 * 30 * 30, 10), input_shape=(3, 32, 32))
    inspector = Inspector(colour, dataset=None, name="cifar.npz")
    summary = inspector.summary()
    assert not summary["supported"] and "3x32x32" in summary["message"] and "1x28x28" in summary["message"]
    with running_server(inspector) as running:
        status, answer = Client(running.server_address[1]).json("POST", "/api/predict",
                                                                 {"pixels": [[0.0] * 28 for _ in range(28)]})
        assert status == 400 and "3x32x32" in answer["error"]


def test_cnn_and_lenet_show_every_layer():
    for build, maps in ((models.cnn, 8), (models.lenet, 6)):
        summary = Inspector(build(), dataset="mnist").summary()
        assert len(summary["layers"]) == len(build().layers)
        assert len(summary["grad_cam_layers"]) == maps


def test_a_test_image_comes_with_the_models_prediction_as_readme_says(client, model):
    images, labels = synthetic_test_set()
    for query in ("kind=random", "index=4", "kind=misclassified"):
        status, image = client.json("GET", f"/api/test-image?{query}")
        logits, outputs = forward(model, images[image["index"]] / 255)
        prediction = image["prediction"]
        assert status == 200 and image["predicted"] == prediction["predicted"] == int(np.argmax(logits))
        np.testing.assert_allclose(prediction["probabilities"], softmax(logits)[0], atol=1e-6)
        np.testing.assert_allclose(prediction["input"], images[image["index"]] / 255, atol=1e-4)
        assert len(prediction["layers"]) == len(outputs) and prediction["grad_cam"]["layer"] == "4 ReLU"
        assert prediction["saliency"]["shape"] == [28, 28]


def test_a_missing_test_set_gets_a_404_that_names_nothing_on_the_servers_disk(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # the data cache would be under it: ~/.cache/minicnn
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    with running_server(Inspector(small_model(), dataset="mnist", name="small.npz")) as running:
        status, _, content = Client(running.server_address[1]).request("GET", "/api/test-image?kind=random")
    message = json.loads(content)["error"]
    assert status == 404 and "minicnn fetch mnist" in message
    assert str(tmp_path) not in content.decode() and "/" not in message and ".cache" not in message


def test_an_internal_error_names_only_its_type(client, server, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError(f"[Errno 5] cannot read {Path.home() / 'secret' / 'weights.npz'}")

    monkeypatch.setattr(server.app.inspector, "summary", broken)
    status, answer = client.json("GET", "/api/summary")
    assert status == 500 and answer["error"].startswith("internal error (OSError)") and "secret" not in answer["error"]
    assert "secret" in capsys.readouterr().err  # the details stay with the server


# ----- models whose outputs are not finite ------------------------------------------------------------------

def test_replace_non_finite_gives_null_and_counts():
    value = {"a": [1.0, float("nan"), np.float32("inf")], "b": np.array([[-np.inf, 2.0]]), "c": (3, "x", None, True)}
    clean, count = replace_non_finite(value)
    assert clean == {"a": [1.0, None, None], "b": [[None, 2.0]], "c": [3, "x", None, True]} and count == 3
    json.dumps(clean, allow_nan=False)
    assert replace_non_finite({"p": [0.5, 0.5]}) == ({"p": [0.5, 0.5]}, 0)
    assert "NaN or infinite" in non_finite_warning(3) and "\n" not in non_finite_warning(3)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the engine's, on inf weights
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_model_with_non_finite_outputs_is_answered_with_nulls_and_a_warning(bad):
    broken = small_model()
    broken.layers[-1].weight.data[...] = bad  # the Dense layer: every logit NaN (or +-inf, so softmax NaN)
    image = (synthetic_test_set()[0][0] / 255).tolist()
    with running_server(Inspector(broken, dataset="mnist", name="diverged.npz",
                                  test_images=synthetic_test_set())) as running:
        client = Client(running.server_address[1])
        status, answer = client.json("POST", "/api/predict", {"pixels": image})
        assert status == 200, answer
        assert answer["probabilities"] == [None] * 10 and answer["predicted"] is None and answer["class"] is None
        assert "NaN or infinite" in answer["warning"] and "null" in answer["warning"]
        assert answer["layers"][-1]["values"] == [None] * 10 and answer["layers"][0]["kind"] == "maps"
        status, image = client.json("GET", "/api/test-image?index=0")
        assert status == 200 and image["predicted"] is None and "warning" in image
        assert client.json("GET", "/api/summary")[0] == 200


# ----- HTTP: one reading of each request, every error as JSON -------------------------------------------------

def raw_exchange(port, data):
    """Send `data` as bytes on a fresh connection and return what comes back until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def parse_responses(received):
    """[(status, headers {lower name: value}, body)] of the HTTP/1.1 responses in `received`."""
    responses = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict((name.strip().lower(), value.strip()) for name, _, value in
                       (line.partition(":") for line in lines[1:]))
        length = int(headers.get("content-length", 0))
        responses.append((int(lines[0].split()[1]), headers, rest[:length]))
        received = rest[length:]
    return responses


def request_bytes(port, method, target, headers, body=b""):
    lines = [f"{method} {target} HTTP/1.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.mark.parametrize("case", ["two Content-Length", "two Host", "space before the colon",
                                  "chunked and Content-Length"])
def test_request_smuggling_shapes_get_400_and_nothing_else(client, case):
    port, host = client.port, f"Host: 127.0.0.1:{client.port}"
    hidden = request_bytes(port, "GET", "/api/summary", [host])  # what a smuggler hopes is answered second
    body = json.dumps({"pixels": [[0.0] * 28 for _ in range(28)]}).encode()
    headers = {
        "two Content-Length": [host, f"Content-Length: {len(body)}", f"Content-Length: {len(body) + len(hidden)}"],
        "two Host": [host, "Host: attacker.example", f"Content-Length: {len(body)}"],
        "space before the colon": [host, "Transfer-Encoding : chunked", f"Content-Length: {len(body)}"],
        "chunked and Content-Length": [host, "Transfer-Encoding: chunked", f"Content-Length: {len(body)}"],
    }[case]
    responses = parse_responses(raw_exchange(port, request_bytes(port, "POST", "/api/predict", headers, body + hidden)))
    assert len(responses) == 1, [status for status, _, _ in responses]  # the hidden request is never answered
    status, response_headers, content = responses[0]
    assert status == 400 and response_headers["content-type"] == "application/json"
    assert json.loads(content)["error"] and response_headers.get("connection") == "close"
    assert client.json("GET", "/api/summary")[0] == 200


def test_414_431_501_and_413_come_back_as_json(client):
    from minicnn.serve.waitress_server import MAX_HEADER_BYTES

    host = f"Host: 127.0.0.1:{client.port}\r\nConnection: close"  # the app's errors keep a connection open
    # Exactly the limit, still unfinished: the server reads it all before answering, so it closes cleanly
    # (a client still sending when the server closes may be reset before it reads the answer).
    big_headers = request_bytes(client.port, "GET", "/api/summary", [host, "X-Big: "])[:-4]
    big_headers += b"b" * (MAX_HEADER_BYTES - len(big_headers))
    cases = {
        414: request_bytes(client.port, "GET", "/api/summary?" + "a" * MAX_TARGET_BYTES, [host]),  # the app's
        431: big_headers,  # waitress's
        501: request_bytes(client.port, "PATCH", "/api/predict", [host, "Content-Length: 0"]),  # the app's
        413: request_bytes(client.port, "POST", "/api/predict", [host, f"Content-Length: {MAX_BODY_BYTES + 1}"]),
    }
    cases["501 coding"] = request_bytes(client.port, "POST", "/api/predict", [host, "Transfer-Encoding: gzip"])
    for expected, data in cases.items():
        status, headers, content = parse_responses(raw_exchange(client.port, data))[0]
        assert status == int(str(expected)[:3]) and headers["content-type"] == "application/json", (expected, content)
        message = json.loads(content)["error"]
        assert message and "\n" not in message and "waitress" not in message
    assert client.json("GET", "/api/summary")[0] == 200


def test_200_concurrent_clients_all_get_an_answer(server, client):
    """Every client is answered: 200, or 503 with Retry-After (waitress queues instead: see waitress_server)."""
    image = json.dumps({"pixels": (synthetic_test_set()[0][0] / 255).tolist(), "activations": False,
                        "saliency": False}).encode()
    answers, start = [], threading.Barrier(200)

    def ask():
        start.wait()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=60)
            connection.request("POST", "/api/predict", image, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answers.append((response.status, response.getheader("Retry-After"), len(response.read())))
            connection.close()
        except OSError as error:
            answers.append((type(error).__name__, None, 0))

    threads = [threading.Thread(target=ask) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [answer for answer in answers if answer[0] != 200 and not (answer[0] == 503 and answer[1])]
    assert len(answers) == 200 and refused == []


def test_a_client_that_disconnects_leaves_at_most_a_line_and_no_traceback(client, caplog, capfd):
    body = json.dumps({"pixels": (synthetic_test_set()[0][0] / 255).tolist()}).encode()
    data = request_bytes(client.port, "POST", "/api/predict", [f"Host: 127.0.0.1:{client.port}",
                                                               f"Content-Length: {len(body)}"], body)
    caplog.set_level(logging.DEBUG)
    disconnects = 30
    for attempt in range(disconnects):
        connection = socket.create_connection(("127.0.0.1", client.port), timeout=10)
        connection.sendall(data)
        if attempt % 2:
            connection.recv(100)  # part of the answer, then gone
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        connection.close()
    assert client.json("GET", "/api/summary")[0] == 200  # after the disconnected requests, in order
    records = [record for record in caplog.records if record.name.startswith("waitress")]
    assert len(records) <= disconnects and not any(record.exc_info for record in records)
    assert "Traceback" not in capfd.readouterr().err


def test_without_waitress_serve_ends_in_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "waitress", None)  # importlib finds no waitress
    with pytest.raises(ImportError, match=r'pip install -e "\.\[serve\]"'):
        serve(tmp_path / "no-such.npz")  # refused before the checkpoint is read
    checkpoint = save_checkpoint(tmp_path / "best.npz", small_model(), state={"run": {"dataset": "mnist"}})
    from minicnn.cli import main

    assert main(["serve", str(checkpoint), "--port", "0"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and '".[serve]"' in error and "Traceback" not in error


# ----- the command -------------------------------------------------------------------------------------

def start_command(checkpoint, *flags):
    needs_waitress()
    needs_pillow()
    process = subprocess.Popen([sys.executable, "-m", "minicnn", "serve", str(checkpoint), "--port", "0", *flags],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = process.stdout.readline()
    assert " at http://" in line, (line, process.stderr.read() if process.poll() is not None else "")
    return process, line


@pytest.mark.slow
def test_the_command_prints_its_address_serves_and_stops_cleanly_on_ctrl_c(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "best.npz", small_model(), state={"run": {"dataset": "mnist"}})
    process, line = start_command(tmp_path)  # a run folder: its best.npz
    try:
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert Client(port).json("GET", "/api/summary")[1]["model"] == checkpoint.name
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0 and "stopped" in out and "Traceback" not in err


@pytest.mark.slow
def test_another_address_gets_a_warning(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "model.npz", small_model(), state={"run": {"dataset": "mnist"}})
    process, _ = start_command(checkpoint, "--host", "0.0.0.0")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    assert "warning" in err and "0.0.0.0" in err


@pytest.mark.slow
def test_an_onnx_file_is_served_like_its_checkpoint(tmp_path):
    pytest.importorskip("onnx")
    needs_pillow()
    from minicnn import onnx as minicnn_onnx

    model = small_model()
    path = minicnn_onnx.export(model, tmp_path / "small.onnx", metadata={"minicnn.dataset": "mnist"})
    inspector = Inspector.open(path)
    image = synthetic_test_set()[0][0] / 255
    answer = inspector.predict(pixels=image)
    np.testing.assert_allclose(answer["probabilities"], softmax(forward(model, image)[0])[0], atol=1e-5)
    assert inspector.summary()["dataset"] == "mnist"


def test_a_model_without_convolutions_has_saliency_and_no_grad_cam():
    minicnn.manual_seed(0)
    dense = nn.Sequential(nn.Flatten(), nn.Dense(784, 10), input_shape=(1, 28, 28))
    inspector = Inspector(dense, dataset="fashion-mnist")
    image = synthetic_test_set()[0][1] / 255
    answer = inspector.predict(pixels=image)
    assert answer["grad_cam"] is None and inspector.summary()["grad_cam_layers"] == []
    assert answer["classes"][0] == "T-shirt/top" and [layer["kind"] for layer in answer["layers"]] == ["vector"] * 2
    np.testing.assert_allclose(decode_maps(answer["saliency"]), saliency_map(dense, image)[1], atol=1e-3)


class ResidualNet(nn.Module):
    """Not a Sequential: a convolution, a residual block whose ReLU is called twice, a pool and a dense layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2D(1, 4, 3, padding=1)
        self.inner = nn.Conv2D(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2D(4)
        self.flatten = nn.Flatten()
        self.head = nn.Dense(4 * 7 * 7, 10)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.relu(self.inner(x) + x)
        return self.head(self.flatten(self.pool(x)))


def test_a_model_that_is_no_sequential_shows_every_call_in_order():
    minicnn.manual_seed(0)
    inspector = Inspector(ResidualNet(), dataset="mnist")
    summary = inspector.summary()
    assert [layer["name"] for layer in summary["layers"]] == [
        "stem Conv2D", "relu ReLU", "inner Conv2D", "relu ReLU (call 2)", "pool MaxPool2D", "flatten Flatten",
        "head Dense"]
    assert summary["layers"][3]["filter_layer"] == "inner Conv2D" and summary["layers"][3]["parameters"] == 0
    answer = inspector.predict(pixels=synthetic_test_set()[0][2] / 255)
    assert [layer["shape"] for layer in answer["layers"][:4]] == [[4, 28, 28]] * 4
    assert answer["grad_cam"]["layer"] == "relu ReLU"
