"""minicnn.onnx: export checked by ONNX's own checker, reference evaluator and onnxruntime; import of
minicnn's and PyTorch's files; refusals of what minicnn cannot build; bad files."""

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from minicnn import cli, nn, recipe  # noqa: E402
from minicnn import onnx as mo  # noqa: E402
from minicnn.checkpoint import save_checkpoint  # noqa: E402
from minicnn.tensor import Tensor, no_grad  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


def randomise_statistics(model, rng):
    """Batch norm with non-trivial scale, shift and running statistics, so its inference form is really tested."""
    for layer in model.modules():
        if isinstance(layer, (nn.BatchNorm1D, nn.BatchNorm2D)):
            size = layer.num_features
            layer.weight.data = rng.uniform(0.5, 1.5, size).astype(np.float32)
            layer.bias.data = rng.normal(0, 0.3, size).astype(np.float32)
            layer.running_mean[...] = rng.normal(0, 0.3, size)
            layer.running_var[...] = rng.uniform(0.5, 2.0, size)
    return model


def every_layer():
    """(model, sample shape): every exportable layer at least once, nested Sequential included."""
    model = nn.Sequential(
        nn.Conv2D(2, 4, 3, stride=2, padding=1), nn.BatchNorm2D(4), nn.ReLU(),
        nn.MaxPool2D(3, stride=1, padding=1),
        nn.Sequential(nn.Conv2D(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), bias=False), nn.Tanh()),
        nn.AvgPool2d(2, padding=1),
        nn.Flatten(),
        nn.Dense(6 * 3 * 2, 12), nn.BatchNorm1D(12), nn.Sigmoid(), nn.Dropout(0.3),
        nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 5, bias=False), nn.Softmax(),
    )
    return randomise_statistics(model, np.random.default_rng(1)).eval(), (2, 9, 11)


def minicnn_output(model, x):
    with no_grad():
        return model.eval()(Tensor(x)).data


def check_against_onnx(proto, model, x):
    """The file passes onnx's full check and gives minicnn's outputs in the reference evaluator and onnxruntime."""
    onnx.checker.check_model(proto, full_check=True)
    expected = minicnn_output(model, x)
    (reference,) = ReferenceEvaluator(proto).run(None, {"input": x})
    np.testing.assert_allclose(reference, expected, rtol=RTOL, atol=ATOL)
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (runtime,) = session.run(None, {"input": x})
    np.testing.assert_allclose(runtime, expected, rtol=RTOL, atol=ATOL)


def test_every_layer_exports_and_matches_the_reference_evaluator_and_onnxruntime(tmp_path):
    model, shape = every_layer()
    path = mo.export(model, tmp_path / "model.onnx", input_shape=shape)
    proto = onnx.load(path)
    assert [node.op_type for node in proto.graph.node] == [
        "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "Tanh", "AveragePool", "Flatten", "Gemm",
        "BatchNormalization", "Sigmoid", "Gemm", "Relu", "Gemm", "Softmax"]  # Dropout left out
    for batch in (1, 5):  # the batch axis is dynamic
        x = np.random.default_rng(batch).normal(size=(batch, *shape)).astype(np.float32)
        check_against_onnx(proto, model, x)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


@pytest.mark.parametrize("padding", [0, 1])
def test_max_pooling_ties_and_negative_padding_agree_with_onnx(padding):
    # Small integers give many tied maxima; all-negative inputs show that padding is -inf, not 0.
    model = nn.Sequential(nn.MaxPool2D(3, stride=2, padding=padding), nn.AvgPool2D(2, stride=1, padding=1))
    x = -np.random.default_rng(0).integers(1, 4, size=(3, 2, 7, 7)).astype(np.float32)
    check_against_onnx(mo.to_model_proto(model, (2, 7, 7)), model, x)


def test_softmax_flag_turns_logits_into_probabilities():
    model = nn.Sequential(nn.Flatten(), nn.Dense(12, 4))
    proto = mo.to_model_proto(model, (3, 2, 2), softmax=True)
    x = np.random.default_rng(0).normal(size=(6, 3, 2, 2)).astype(np.float32)
    (probabilities,) = ReferenceEvaluator(proto).run(None, {"input": x})
    logits = minicnn_output(model, x)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), rtol=RTOL, atol=ATOL)


def test_a_layer_that_cannot_be_exported_is_named_and_nothing_is_written(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dense(4, 4), Doubler()))
    with pytest.raises(mo.OnnxError, match=r"model\[1\]\[1\] is a Doubler"):
        mo.export(model, tmp_path / "model.onnx", input_shape=(4,))
    assert list(tmp_path.iterdir()) == []


def test_an_input_shape_that_does_not_fit_is_refused():
    with pytest.raises(mo.OnnxError, match="does not fit"):
        mo.to_model_proto(nn.Sequential(nn.Conv2D(3, 2, 3)), (1, 8, 8))


def test_round_trip_gives_the_same_parameters_and_outputs(tmp_path):
    model, shape = every_layer()
    model = nn.Sequential(*[layer for layer in model if not isinstance(layer, nn.Dropout)])
    loaded = mo.load(mo.export(model, tmp_path / "model.onnx", input_shape=shape))
    assert loaded.input_shape == shape and not loaded.training
    original, back = model.state_dict(), loaded.state_dict()
    # The nested Sequential comes back opened: compare the arrays in order.
    assert [array.shape for array in original.values()] == [array.shape for array in back.values()]
    for before, after in zip(original.values(), back.values()):
        np.testing.assert_array_equal(before, after)
    assert [type(layer).__name__ for layer in loaded] == [
        "Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D", "Conv2D", "Tanh", "AvgPool2D", "Flatten", "Dense",
        "BatchNorm1D", "Sigmoid", "Linear", "ReLU", "Linear", "Softmax"]
    x = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    np.testing.assert_array_equal(minicnn_output(loaded, x), minicnn_output(model, x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy (TorchScript) exporter says it is legacy
def test_a_pytorch_export_loads_and_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.nn.Sigmoid(), torch.nn.AvgPool2d(2, padding=1),
        torch.nn.Conv2d(8, 8, 1), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 10),
    )
    with torch.no_grad():
        network[1].running_mean.uniform_(-0.5, 0.5)
        network[1].running_var.uniform_(0.5, 2)
    network.eval()
    path = tmp_path / "torch.onnx"
    try:
        torch.onnx.export(network, (torch.zeros(1, 1, 12, 12),), str(path), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "N"}})
    except (TypeError, ImportError, ModuleNotFoundError) as error:
        pytest.skip(f"torch.onnx.export(dynamo=False) is not available here: {error}")
    assert {"GlobalAveragePool", "AveragePool", "MaxPool", "Gemm", "Flatten"} <= {
        node.op_type for node in onnx.load(path).graph.node}
    model = mo.load(path)
    x = np.random.default_rng(0).normal(size=(5, 1, 12, 12)).astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(minicnn_output(model, x), expected, rtol=1e-4, atol=1e-5)
    assert any(isinstance(layer, nn.Linear) for layer in model)


# ----- hand-built graphs -----------------------------------------------------------------------------

def make_model(nodes, initializers=(), sample=(4,), output="y", opset=17, output_rank=None):
    output_shape = [f"d{axis}" for axis in range(output_rank or 1 + len(sample))]
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *sample])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        initializer=[numpy_helper.from_array(np.asarray(array), name) for name, array in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def write(tmp_path, proto, name="model.onnx"):
    path = tmp_path / name
    path.write_bytes(proto.SerializeToString())
    return path


def test_matmul_add_becomes_dense_and_reshape_becomes_flatten(tmp_path):
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(12, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    proto = make_model(
        [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Reshape", ["i", "shape"], ["f"], name="flat"),
         helper.make_node("MatMul", ["f", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        [("shape", np.array([0, -1], np.int64)), ("w", weight), ("b", bias)], sample=(3, 2, 2), output_rank=2)
    model = mo.load(write(tmp_path, proto))
    assert [type(layer).__name__ for layer in model] == ["Flatten", "Dense"]
    x = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)
    (expected,) = ReferenceEvaluator(proto).run(None, {"x": x})
    np.testing.assert_allclose(minicnn_output(model, x), expected, rtol=RTOL, atol=ATOL)


def test_every_unsupported_operator_is_listed_in_one_error(tmp_path):
    proto = make_model([helper.make_node("Relu", ["x"], ["a"], name="fine"),
                        helper.make_node("LeakyRelu", ["a"], ["b"], name="leaky"),
                        helper.make_node("Elu", ["b"], ["y"], name="elu")])
    listed = r"2 operator\(s\).*LeakyRelu \(LeakyRelu node 'leaky'\).*Elu \(Elu node 'elu'\)"
    with pytest.raises(mo.OnnxError, match=listed):
        mo.load(write(tmp_path, proto))


def conv_model(**attributes):
    weight = np.ones((2, 1, 3, 3), np.float32)
    return make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attributes)], [("w", weight)],
                      sample=(1, 8, 8))


@pytest.mark.parametrize("proto, message", [
    (conv_model(pads=[1, 1, 0, 0]), "asymmetric pads"),
    (conv_model(dilations=[2, 2]), "dilations"),
    (conv_model(auto_pad="SAME_UPPER"), "auto_pad SAME_UPPER"),
    (conv_model(strides=[1, 1, 1]), "not 2-d"),
    (make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=2)],
                [("w", np.ones((2, 1, 3, 3), np.float32))], sample=(2, 8, 8)), "group=2"),
    (make_model([helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], ceil_mode=1)],
                sample=(1, 5, 5)), "ceil_mode"),
    (make_model([helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1])],
                sample=(1, 5, 5)), "count_include_pad=0"),
    (make_model([helper.make_node("Gemm", ["x", "w"], ["y"], name="gemm")], [("w", np.ones((5, 2), np.float32))]),
     r"does not fit its input"),
    (make_model([helper.make_node("Flatten", ["x"], ["y"], name="flat", axis=2)], sample=(2, 3), output_rank=2),
     "axis=2"),
    (make_model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Add", ["x", "a"], ["y"], name="skip")]),
     "residual"),
    (make_model([helper.make_node("Relu", ["x"], ["a"], name="one"),
                 helper.make_node("Relu", ["x"], ["y"], name="two")]), "read by 2 nodes"),
])
def test_attributes_and_graphs_minicnn_cannot_build_are_refused_with_the_node(tmp_path, proto, message):
    with pytest.raises(mo.OnnxError, match=message):
        mo.load(write(tmp_path, proto))


# ----- bad files ----------------------------------------------------------------------------------

@pytest.fixture
def good_file(tmp_path):
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 6 * 6, 3))
    return mo.export(model, tmp_path / "good.onnx", input_shape=(1, 8, 8))


def test_a_truncated_file_is_refused(tmp_path, good_file):
    data = good_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 10):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(mo.OnnxError, match=str(path.name)):
            mo.load(path)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model\n" * 40, b"\x89PNG\r\n\x1a\n" + bytes(200),
                                     b"PK\x03\x04" + bytes(100)])
def test_a_file_that_is_not_onnx_is_refused(tmp_path, content):
    path = tmp_path / "not.onnx"
    path.write_bytes(content)
    with pytest.raises(mo.OnnxError, match="empty|not an ONNX model"):
        mo.load(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        mo.load(tmp_path / "nothing.onnx")


def test_a_cycle_and_a_dangling_input_are_refused(tmp_path):
    cycle = make_model([helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                        helper.make_node("Relu", ["a"], ["b"], name="second"),
                        helper.make_node("Relu", ["b"], ["y"])])
    with pytest.raises(mo.OnnxError, match="node 'first' reads 'b' before it is computed"):
        mo.load(write(tmp_path, cycle))
    dangling = make_model([helper.make_node("Relu", ["ghost"], ["y"], name="lost")])
    with pytest.raises(mo.OnnxError, match="'ghost', which no node.*dangling"):
        mo.load(write(tmp_path, dangling))


def test_an_initialiser_whose_size_does_not_match_its_shape_is_refused(tmp_path, good_file):
    proto = onnx.load(good_file)
    weight = proto.graph.initializer[0]
    weight.raw_data = weight.raw_data[:-4]
    short = r"initialiser 'model\[0\].weight' has the shape \[2, 1, 3, 3\].*holds 68 bytes"
    with pytest.raises(mo.OnnxError, match=short):
        mo.load(write(tmp_path, proto, "short.onnx"))
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), weight.name))
    with pytest.raises(mo.OnnxError, match="dtype INT8"):
        mo.load(write(tmp_path, proto, "int8.onnx"))


def test_a_missing_onnx_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"\.\[onnx\]"):
        mo.export(nn.Sequential(nn.ReLU()), tmp_path / "model.onnx", input_shape=(3,))


# ----- the command line --------------------------------------------------------------------------

def test_cli_export_writes_a_file_that_loads_with_the_dataset_named(tmp_path, capsys):
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(2 * 3 * 3, 10),
                          input_shape=(1, 8, 8))
    checkpoint = save_checkpoint(tmp_path / "best.npz", model, state={"run": {"dataset": "mnist"}})
    out = tmp_path / "model.onnx"
    assert cli.main(["export", str(checkpoint), str(out), "--softmax"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    read = mo.read(out)
    assert read.state == {"run": {"dataset": "mnist"}}
    x = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32)
    probabilities = minicnn_output(read.model, x)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-6)
    logits = minicnn_output(model, x)
    np.testing.assert_allclose(np.log(probabilities) - np.log(probabilities[:, :1]), logits - logits[:, :1],
                               rtol=1e-4, atol=1e-5)


def test_cli_export_of_a_bad_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nonsense")
    assert cli.main(["export", str(bad), str(tmp_path / "out.onnx")]) == 1
    assert "minicnn export:" in capsys.readouterr().err


def test_cli_show_opens_an_onnx_file(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="minicnn show draws with matplotlib (pip install -e \".[viz]\")")
    rng = np.random.default_rng(0)
    monkeypatch.setitem(recipe.LOADERS, "mnist", lambda split: (rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
                                                             np.arange(4)))
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(2 * 13 * 13, 10))
    path = mo.export(model, tmp_path / "model.onnx", metadata={"minicnn.dataset": "mnist"})
    assert cli.main(["show", str(path), "--image-index", "1", "--out", str(tmp_path / "show")]) == 0
    assert (tmp_path / "show" / "saliency.png").exists()
    assert "model.onnx: mnist test image 1" in capsys.readouterr().out


# ----- hostile files: memory checked before allocating, names escaped, special files ----------------------

def test_a_declared_input_over_the_sample_cap_is_refused_before_allocating(tmp_path):
    # 1 x 9000 x 9000 floats: 309 MiB for one sample, declared by a file of ~100 bytes.
    proto = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], sample=(1, 9000, 9000))
    with pytest.raises(mo.OnnxError, match=r"input 'x': one sample needs 309\.0 MiB .*MAX_SAMPLE_BYTES"):
        mo.load(write(tmp_path, proto))


def test_the_memory_limit_lowers_the_sample_cap(tmp_path):
    from minicnn import backend

    proto = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], sample=(2**22,))  # 16 MiB a sample
    backend.set_memory_limit(8 << 20)
    try:
        with pytest.raises(mo.OnnxError, match=r"input 'x': one sample needs 16\.0 MiB"):
            mo.load(write(tmp_path, proto))
    finally:
        backend.set_memory_limit(None)


@pytest.mark.parametrize("op_type", ["Conv", "MaxPool"])
def test_huge_pads_are_refused_with_the_node_before_the_layer_runs(tmp_path, op_type):
    # pads of 3000 around one pixel: a 6001 x 6001 map, its columns and output, 412 MiB for one sample.
    attributes = {"pads": [3000] * 4, "kernel_shape": [1, 1]}
    inputs, initializers = (["x", "w"], [("w", np.ones((1, 1, 1, 1), np.float32))]) if op_type == "Conv" \
        else (["x"], [])
    proto = make_model([helper.make_node(op_type, inputs, ["y"], name="wide", **attributes)], initializers,
                       sample=(1, 1, 1))
    with pytest.raises(mo.OnnxError, match=rf"{op_type} node 'wide': one sample needs .*padded input "
                                           rf"\(1, 6001, 6001\).*MAX_SAMPLE_BYTES"):
        mo.load(write(tmp_path, proto))


def test_weights_over_the_files_budget_are_refused_before_they_are_converted(tmp_path):
    from minicnn import backend

    weight = np.ones((600, 600), np.float32)  # 1.4 MiB, honestly stored
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="m")], [("w", weight)], sample=(600,))
    backend.set_memory_limit(1 << 20)
    try:
        with pytest.raises(mo.OnnxError, match=r"its weights declare 1\.4 MiB.*file_budget"):
            mo.load(write(tmp_path, proto))
    finally:
        backend.set_memory_limit(None)


@pytest.mark.parametrize("axis", [2, 5, -3])
def test_a_softmax_axis_out_of_range_is_refused_not_wrapped(tmp_path, axis):
    proto = make_model([helper.make_node("Softmax", ["x"], ["y"], name="s", axis=axis)], sample=(4,))
    with pytest.raises(mo.OnnxError, match=rf"Softmax node 's': axis={axis} is out of range for its 2-d input"):
        mo.load(write(tmp_path, proto))


def test_names_from_the_file_are_escaped_and_cut_in_messages(tmp_path):
    forged = "a\nminicnn: all good\x1b[2J" + "x" * 200
    proto = make_model([helper.make_node("Relu", ["x"], ["a"], name="fine"),
                        helper.make_node("LeakyRelu", ["a"], ["y"], name=forged)])
    with pytest.raises(mo.OnnxError) as error:
        mo.load(write(tmp_path, proto))
    message = str(error.value)
    assert "\n" not in message and "\x1b" not in message
    assert r"LeakyRelu node 'a\nminicnn: all good\x1b[2J" in message and "(223 characters)" in message
    assert "x" * 200 not in message


@pytest.mark.skipif(not hasattr(sys.modules["os"], "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_a_device_is_refused_without_reading_it(tmp_path):
    import os
    import threading

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    outcome = {}

    def load():
        try:
            mo.load(fifo)
        except Exception as error:  # noqa: BLE001 (handed back to the test)
            outcome["error"] = error

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():  # open the writing end so that the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("minicnn.onnx.load blocked on a FIFO")
    assert isinstance(outcome.get("error"), mo.OnnxError) and "not a regular file" in str(outcome["error"])
    if os.path.exists("/dev/zero"):
        with pytest.raises(mo.OnnxError, match="/dev/zero' is a character device, not a regular file"):
            mo.load("/dev/zero")


def test_forged_metadata_is_refused_escaped(tmp_path):
    proto = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    helper.set_model_props(proto, {"minicnn.dataset": "mnist\n\x1b[2Jminicnn: fine"})
    with pytest.raises(mo.OnnxError, match=r"metadata minicnn.dataset 'mnist\\n\\x1b\[2Jminicnn: fine' is not"):
        mo.read(write(tmp_path, proto))
