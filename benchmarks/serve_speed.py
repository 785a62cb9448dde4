"""How fast `minicnn serve` answers: one prediction with every layer's output, saliency and Grad-CAM.

    python3 -m benchmarks.serve_speed [CHECKPOINT] [--requests 200] [--clients 8]

Starts `minicnn serve` as a subprocess on a free port of 127.0.0.1 (CHECKPOINT, default an untrained
`cnn` saved to a temporary folder: the speed does not depend on the weights), then
 1. one client sends --requests POST /api/predict requests one after another (MNIST test images when
    the cache has them, else random images), each asking for all activations, saliency and Grad-CAM,
    and reports the median, 90th percentile and fastest round trip;
 2. --clients clients send --requests such requests each at the same time (one keep-alive connection
    each) and report the errors (none expected) and the throughput.
The server uses the model under one lock, so throughput is about 1 / (time per prediction); the clients
run in this process, the server in its own. The time inside Inspector.predict (no HTTP, no JSON) is
measured in this process too, for comparison. Results go to benchmarks/results/scratch/serve_speed.json.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import minicnn
from minicnn import models
from minicnn.checkpoint import save_checkpoint
from minicnn.data import load_mnist
from minicnn.serve import Inspector

from .common import SCRATCH, machine_description, write_json

ROOT = Path(__file__).resolve().parents[1]


def test_images(count):
    try:
        images = load_mnist("test", download=False)[0][:count]
    except (OSError, ValueError):  # no cached MNIST: random images time the same
        images = np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    return [json.dumps({"pixels": np.round(image / 255, 4).tolist()}).encode() for image in images]


def start_server(checkpoint):
    process = subprocess.Popen([sys.executable, "-m", "minicnn", "serve", str(checkpoint), "--port", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = process.stdout.readline()
    if " at http://" not in line:
        process.kill()
        raise RuntimeError(f"minicnn serve did not start: {line!r}")
    return process, int(line.split("http://127.0.0.1:")[1].split("/")[0])


def post(connection, body):
    connection.request("POST", "/api/predict", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    content = response.read()
    return response.status, content


def one_client(port, bodies):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    seconds = []
    for body in bodies:
        start = time.perf_counter()
        status, content = post(connection, body)
        seconds.append(time.perf_counter() - start)
        if status != 200 or "grad_cam" not in json.loads(content):
            raise RuntimeError(f"HTTP {status}: {content[:200]!r}")
    connection.close()
    return seconds


def many_clients(port, bodies, clients):
    errors, done = [], []
    start_together = threading.Barrier(clients)

    def client(offset):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start_together.wait()
        for index in range(len(bodies)):
            try:
                status, content = post(connection, bodies[(index + offset) % len(bodies)])
                if status != 200:
                    errors.append(f"HTTP {status}")
                else:
                    done.append(1)
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        connection.close()

    threads = [threading.Thread(target=client, args=(offset * 7,)) for offset in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(done), errors, time.perf_counter() - start


def in_process(checkpoint, bodies):
    inspector = Inspector.open(checkpoint)
    pixels = [np.asarray(json.loads(body)["pixels"], dtype=np.float32) for body in bodies]
    for image in pixels[:3]:
        inspector.predict(pixels=image)
    seconds = []
    for image in pixels:
        start = time.perf_counter()
        inspector.predict(pixels=image)
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None,
                        help="a .npz or .onnx file or a run folder (default: an untrained cnn)")
    parser.add_argument("--requests", type=int, default=200, help="requests per client (default 200)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint
        if checkpoint is None:
            minicnn.manual_seed(0)
            checkpoint = save_checkpoint(Path(scratch) / "cnn.npz", models.cnn(), state={"run": {"dataset": "mnist"}})
        bodies = test_images(args.requests)
        process, port = start_server(checkpoint)
        try:
            one_client(port, bodies[:5])  # warm-up
            single = one_client(port, bodies)
            answered, errors, seconds = many_clients(port, bodies, args.clients)
        finally:
            process.terminate()
            process.wait(timeout=30)
        direct = in_process(checkpoint, bodies)
    rows = {
        "checkpoint": str(args.checkpoint or "untrained cnn"),
        "requests": args.requests, "clients": args.clients,
        "single_median_ms": 1e3 * statistics.median(single),
        "single_p90_ms": 1e3 * float(np.percentile(single, 90)),
        "single_min_ms": 1e3 * min(single),
        "inspector_median_ms": 1e3 * statistics.median(direct),
        "concurrent_answered": answered, "concurrent_errors": len(errors), "concurrent_seconds": seconds,
        "throughput_per_s": answered / seconds,
        "load_average": os.getloadavg()[0],
    }
    print(f"minicnn serve, {rows['checkpoint']}: POST /api/predict with all activations, saliency and Grad-CAM")
    print(f"  1 client x {args.requests}: median {rows['single_median_ms']:.1f} ms, 90% {rows['single_p90_ms']:.1f} ms, "
          f"fastest {rows['single_min_ms']:.1f} ms (Inspector.predict alone: median {rows['inspector_median_ms']:.1f} ms)")
    print(f"  {args.clients} clients x {args.requests}: {answered} answered, {len(errors)} errors, "
          f"{seconds:.1f} s, {rows['throughput_per_s']:.1f} requests/s")
    print(f"  load average during the run: {rows['load_average']:.1f}")
    if errors:
        print("  first errors:", errors[:3])
    path = write_json(SCRATCH, "serve_speed.json", {"machine": machine_description(np), "rows": [rows]})
    print(f"wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
