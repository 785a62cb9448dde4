"""Graph export as Graphviz DOT text and rendered pictures (viz/graph.py)."""

import collections
import re
import shutil

import numpy as np
import pytest

import minicnn
from minicnn import functional as F
from minicnn.viz import export_graph, graph, render, to_dot

NODE = re.compile(r'^  (n\d+) \[label="(.*?)", shape=(\w+)')
EDGE = re.compile(r"^  (n\d+) -> (n\d+);$")


def _nodes(dot_text):
    """{node id: (label, shape)} in the order the DOT text declares them."""
    return {match[1]: (match[2], match[3]) for match in map(NODE.match, dot_text.splitlines()) if match}


def _edges(dot_text):
    return [(match[1], match[2]) for match in map(EDGE.match, dot_text.splitlines()) if match]


def _cnn_loss(seed=0):
    minicnn.manual_seed(seed)
    model = minicnn.models.cnn()
    rng = np.random.default_rng(seed)
    x = minicnn.tensor(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
    labels = minicnn.tensor(rng.integers(0, 10, size=8))
    return model, F.cross_entropy(model(x), labels)


def test_cnn_graph_has_one_node_per_operation_and_leaf():
    model, loss = _cnn_loss()
    dot_text = to_dot(loss, model=model)
    assert dot_text.startswith("digraph") and dot_text.rstrip().endswith("}")
    nodes = _nodes(dot_text)
    op_labels = [label for label, shape in nodes.values() if shape == "box"]
    op_counts = collections.Counter(label.split("\\n")[0] for label in op_labels)
    assert op_counts == {"Conv2dOp": 3, "ReLU": 4, "MaxPool2dOp": 2, "Reshape": 1, "Linear": 2, "CrossEntropy": 1}
    leaf_labels = [label for label, shape in nodes.values() if shape == "ellipse"]
    # 10 parameters, the images and the labels.
    assert len(leaf_labels) == len(model.parameters()) + 2
    for name, parameter in model.named_parameters():
        assert f"{name} {parameter.shape} float32" in leaf_labels
    assert "input (8, 1, 28, 28) float32" in leaf_labels
    assert "labels (8,) int64" in leaf_labels or "labels (8,) int32" in leaf_labels
    assert "Conv2dOp\\n(8, 32, 26, 26) float32" in op_labels
    assert "MaxPool2dOp\\n(8, 64, 5, 5) float32" in op_labels
    assert "Reshape\\n(8, 576) float32" in op_labels
    assert "CrossEntropy\\n() float32" in op_labels
    # Every operation has an edge from each of its inputs: 3 per conv and linear, 2 for the loss, 1 otherwise.
    edges = _edges(dot_text)
    assert len(edges) == 3 * 3 + 3 * 2 + 2 + 4 + 2 + 1
    in_degree = collections.Counter(target for _, target in edges)
    assert all(in_degree[node] == 3 for node, (label, _) in nodes.items() if label.startswith(("Conv2dOp", "Linear")))
    assert all(node in nodes for edge in edges for node in edge)


def test_first_convolution_takes_the_images_and_its_parameters():
    model, loss = _cnn_loss()
    dot_text = to_dot(loss, model=model)
    nodes = _nodes(dot_text)
    by_label = {label: node for node, (label, _) in nodes.items()}
    first_conv = by_label["Conv2dOp\\n(8, 32, 26, 26) float32"]
    sources = {nodes[source][0] for source, target in _edges(dot_text) if target == first_conv}
    assert sources == {"input (8, 1, 28, 28) float32", "0.weight (32, 1, 3, 3) float32", "0.bias (32,) float32"}


def test_output_is_deterministic():
    model, loss = _cnn_loss()
    _, same_loss = _cnn_loss()
    assert to_dot(loss, model=model) == to_dot(loss, model=model)
    # A second model has other ids, but the same graph gives the same text (parameters unnamed here).
    assert to_dot(loss) == to_dot(same_loss)


def test_a_tensor_used_twice_is_one_node_with_two_edges():
    x = minicnn.tensor([1.0, 2.0], requires_grad=True)
    dot_text = to_dot((x * x).sum(), names={id(x): "x"})
    nodes = _nodes(dot_text)
    assert [label for label, _ in nodes.values()] == ["x (2,) float32", "Multiply\\n(2,) float32", "Sum\\n() float32"]
    assert _edges(dot_text) == [("n0", "n1"), ("n0", "n1"), ("n1", "n2")]


def test_unnamed_leaves_and_python_constants():
    x = minicnn.tensor([1.0, 2.0], requires_grad=True)
    labels = [label for label, _ in _nodes(to_dot((x * 2.0).sum())).values()]
    assert labels == ["input (2,) float32", "constant () float32", "Multiply\\n(2,) float32", "Sum\\n() float32"]


def test_title_is_quoted():
    x = minicnn.tensor([1.0], requires_grad=True)
    dot_text = to_dot(x * 2.0, title='my "net"')
    assert 'label="my \\"net\\"";' in dot_text


def test_export_after_backward_explains_retain_graph():
    model, loss = _cnn_loss()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"before calling backward\(\).*retain_graph=True"):
        to_dot(loss, model=model)


def test_export_after_backward_with_retain_graph_works():
    model, loss = _cnn_loss()
    loss.backward(retain_graph=True)
    assert "CrossEntropy" in to_dot(loss, model=model)


def test_a_tensor_without_graph_is_refused():
    model, _ = _cnn_loss()
    with minicnn.no_grad():
        output = model(minicnn.tensor(np.zeros((1, 1, 28, 28), dtype=np.float32)))
    with pytest.raises(ValueError, match="no graph"):
        to_dot(output)
    with pytest.raises(TypeError, match="Tensor"):
        to_dot(np.zeros(3))


def test_render_dot_writes_the_text(tmp_path):
    model, loss = _cnn_loss()
    written = export_graph(loss, tmp_path / "graph.dot", model=model)
    assert written == tmp_path / "graph.dot"
    assert written.read_text() == to_dot(loss, model=model)


def test_render_without_graphviz_writes_dot_and_explains(tmp_path, monkeypatch):
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"`dot` program is not installed.*apt-get install graphviz.*graph\.dot"):
        render("digraph minicnn {\n}\n", tmp_path / "graph.svg")
    assert (tmp_path / "graph.dot").read_text() == "digraph minicnn {\n}\n"
    assert not (tmp_path / "graph.svg").exists()


def test_render_refuses_other_formats(tmp_path):
    with pytest.raises(ValueError, match=r"\.svg"):
        render("digraph minicnn {\n}\n", tmp_path / "graph.jpeg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_render_svg_with_graphviz(tmp_path):
    model, loss = _cnn_loss()
    written = export_graph(loss, tmp_path / "graph.svg", model=model, title="cnn")
    text = written.read_text()
    assert text.startswith("<?xml") or "<svg" in text
    assert "Conv2dOp" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_render_reports_graphviz_errors(tmp_path):
    with pytest.raises(RuntimeError, match="Graphviz `dot` failed"):
        render("this is not DOT", tmp_path / "graph.svg")
