"""minicnn serve: the JSON API against a real server on a free port of 127.0.0.1, its security cases,
concurrent requests, and the command (start, address line, Ctrl-C) in a subprocess."""

import http.client
import json
import math
import os
import signal
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
from minicnn.serve import MAX_BODY_BYTES, Inspector, decode_maps, make_server, serve_in_thread
from minicnn.tensor import Tensor, no_grad
from minicnn.viz.saliency import grad_cam, saliency_map

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def server(model):
    test_images = synthetic_test_set()
    inspector = Inspector(model, dataset="mnist", name="small.npz", test_images=test_images)
    running = make_server(inspector, "127.0.0.1", 0)
    serve_in_thread(running)
    yield running
    running.shutdown()
    running.server_close()


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
    running = make_server(inspector, "127.0.0.1", 0)
    serve_in_thread(running)
    try:
        status, answer = Client(running.server_address[1]).json("POST", "/api/predict",
                                                                 {"pixels": [[0.0] * 28 for _ in range(28)]})
        assert status == 400 and "3x32x32" in answer["error"]
    finally:
        running.shutdown()
        running.server_close()


def test_cnn_and_lenet_show_every_layer():
    for build, maps in ((models.cnn, 8), (models.lenet, 6)):
        summary = Inspector(build(), dataset="mnist").summary()
        assert len(summary["layers"]) == len(build().layers)
        assert len(summary["grad_cam_layers"]) == maps


# ----- the command -------------------------------------------------------------------------------------

def start_command(checkpoint, *flags):
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
