"""The computation graph behind a tensor, as Graphviz DOT text or a rendered picture.

    loss = F.cross_entropy(model(x), y)
    export_graph(loss, "graph.svg", model=model)   # before loss.backward()

Every tensor knows the Operation that created it (`creator`) and every operation
its inputs, so walking back from the result finds the whole graph: one box per
operation, labelled with its name and the shape and dtype of what it produced,
and one oval per leaf tensor (the input, the labels, each parameter). Operations
are named as their functions are spelled (`conv2d`, `max_pool2d`, `relu`; see
`Operation.name`), so a box never reads like the layer (`Conv2D`) that made it.
backward() releases the graph as it goes, so export before it, or call
backward(retain_graph=True).
"""

import pathlib
import shutil
import subprocess

from ..tensor import Operation, Tensor, post_order

RENDERED_FORMATS = (".svg", ".png", ".pdf")
DOT_TIMEOUT_SECONDS = 60


def _quote(text):
    r"""`text` as a DOT string literal; a real newline becomes DOT's \n line break."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _describe(tensor):
    return f"{tuple(tensor.shape)} {tensor.dtype}"


def _leaf_label(tensor, names, role_names):
    name = names.get(id(tensor), role_names.get(id(tensor)))
    if name is None:
        # A Python number in an expression such as x * 2 becomes a 0-d leaf that needs no gradient.
        name = "constant" if tensor.ndim == 0 and not tensor.requires_grad else "input"
    return f"{name} {_describe(tensor)}"


def _role_names(order):
    """{id(leaf): the input name its first consumer gives it}, e.g. 'labels' for cross_entropy's
    second input; only for operations that name their inputs (not the generic 'a', 'b')."""
    roles = {}
    for t in order:
        operation = t.creator
        if operation is None or type(operation).input_names is Operation.input_names:
            continue
        for parent, role in zip(operation.inputs, type(operation).input_names):
            if parent.creator is None:
                roles.setdefault(id(parent), role)
    return roles


def _inputs_of(tensor):
    operation = tensor.creator
    if operation is None:
        return ()
    if operation.inputs is None:
        raise RuntimeError(
            f"to_dot: the graph was already released by backward() (reached {operation.name}); "
            "export the graph before calling backward(), or call backward(retain_graph=True)"
        )
    return operation.inputs


def to_dot(tensor, title=None, names=None, model=None):
    """Graphviz DOT text of the graph that produced `tensor`.

    names: optional {id(tensor): name} for leaves; model: optional Module whose
    named_parameters() name the parameters ('0.weight', ...). Other leaves take the
    name their operation gives that input ('input', 'labels', 'weight'), else 'input'. Raises RuntimeError when backward() already released the graph,
    ValueError when `tensor` has no graph at all.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(tensor).__name__}")
    if tensor.creator is None:
        raise ValueError(
            "to_dot: this tensor has no graph: it is a leaf, computed under no_grad(), or computed from "
            "inputs none of which requires grad; export a result computed from a model's parameters"
        )
    leaf_names = {id(parameter): name for name, parameter in model.named_parameters()} if model is not None else {}
    leaf_names.update(names or {})

    order = post_order(tensor, _inputs_of)  # the same order on every run
    node_ids = {id(t): f"n{position}" for position, t in enumerate(order)}
    role_names = _role_names(order)
    lines = ["digraph minicnn {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    if title is not None:
        lines.append(f"  labelloc=t; label={_quote(title)};")
    for t in order:
        node = node_ids[id(t)]
        if t.creator is None:
            style = 'shape=ellipse, style=filled, fillcolor="#dbe9f6"' if t.requires_grad else "shape=ellipse"
            lines.append(f"  {node} [label={_quote(_leaf_label(t, leaf_names, role_names))}, {style}];")
        else:
            label = f"{t.creator.name}\n{_describe(t)}"
            lines.append(f"  {node} [label={_quote(label)}, shape=box];")
    for t in order:
        if t.creator is not None:
            for parent in t.creator.inputs:
                lines.append(f"  {node_ids[id(parent)]} -> {node_ids[id(t)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text, path):
    """Write DOT text to `path`: '.dot' as it is; '.svg', '.png' or '.pdf' through Graphviz's `dot`.

    Returns the written path (a pathlib.Path). When `dot` is not installed, writes the
    DOT text next to `path` with the suffix '.dot' and raises RuntimeError saying so.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".dot":
        path.write_text(dot_text)
        return path
    if suffix not in RENDERED_FORMATS:
        raise ValueError(f"render: cannot write '{path}'; choose a file ending in .dot, {', '.join(RENDERED_FORMATS)}")
    dot_program = shutil.which("dot")
    if dot_program is None:
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot_text)
        raise RuntimeError(
            "the Graphviz `dot` program is not installed (apt-get install graphviz / brew install graphviz); "
            f"the DOT text was written to {fallback} instead"
        )
    try:
        completed = subprocess.run(
            [dot_program, f"-T{suffix[1:]}", "-o", str(path)],
            input=dot_text.encode(), capture_output=True, timeout=DOT_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"render: Graphviz `dot` did not finish within {DOT_TIMEOUT_SECONDS} s writing '{path}'") from None
    if completed.returncode != 0:
        raise RuntimeError(
            f"render: Graphviz `dot` failed (exit status {completed.returncode}) writing '{path}': "
            f"{completed.stderr.decode(errors='replace').strip()}"
        )
    return path


def export_graph(tensor, path, model=None, title=None, names=None):
    """to_dot(tensor, title, names, model) written to `path` by render(); returns the written path."""
    return render(to_dot(tensor, title=title, names=names, model=model), path)
