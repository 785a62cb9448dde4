"""The model side of `minicnn serve`: one image in, everything the page shows out, as JSON-able dicts.

    inspector = Inspector.open("runs/latest/best.npz")
    inspector.summary()                                   # layers, output shapes, parameter counts
    inspector.predict(pixels=image_28x28)                 # probabilities, every layer's output, saliency, Grad-CAM
    inspector.predict(drawing=canvas_grey, layer="4 ReLU")   # a drawing, prepared as MNIST digits were made
    inspector.test_image("random") / inspector.test_image("misclassified")

Every layer's output is recorded by forward hooks on the model's leaf modules, in the order they are
called, so the page follows any model (a Sequential, a ResNet whose blocks add a shortcut, a layer
called twice), not only a plain chain. The saliency map and Grad-CAM are minicnn.viz.saliency's.

A model, its hooks and its train/eval mode are shared state: a forward pass with hooks from one
request must not run while another request's is running. One lock around each use of the model keeps
concurrent requests apart; the HTTP server's threads still read, parse and check requests in parallel.
"""

import base64
import contextlib
import importlib.util
import threading

import numpy as np

from .. import backend, data, nn
from ..errors import ShapeError
from ..pictures import DATASETS as DRAWABLE_DATASETS, prepare, softmax
from ..runs import read_checkpoint, resolve_checkpoint
from ..tensor import Tensor, no_grad
from ..viz.saliency import grad_cam, grad_cam_layer, image_batch, named_layers, saliency_map

INPUT_SHAPE = (1, 28, 28)  # what the page draws and the test images are
MISCLASSIFIED_BATCH = 256  # test images classified per step of the search for a misclassified one


class RequestError(ValueError):
    """A request the model cannot answer (a bad layer name, no test images, an unsupported model):
    the server answers it with a 4xx status and this one-line message."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def encode_maps(array):
    """A float array as {'shape', 'min', 'max', 'data'}: data is base64 of uint8 values, 0 at min and 255 at max.

    One scale for the whole array (a layer's maps), so that a weak channel looks weak beside a strong one.
    A page turns it into pixels without parsing thousands of JSON numbers. NaN and infinite values (a
    diverged model) are left out of min and max and shown at level 0; with none finite, min and max are 0.
    """
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    low, high = (float(array[finite].min()), float(array[finite].max())) if finite.any() else (0.0, 0.0)
    array = np.where(finite, array, low)
    scaled = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
    levels = np.rint(scaled).astype(np.uint8)
    return {"shape": list(array.shape), "min": low, "max": high,
            "data": base64.b64encode(levels.tobytes()).decode("ascii")}


def decode_maps(encoded):
    """encode_maps' output back as a float64 array (to 1/255 of its range): for scripts and tests."""
    levels = np.frombuffer(base64.b64decode(encoded["data"]), dtype=np.uint8).reshape(encoded["shape"])
    return encoded["min"] + levels / 255 * (encoded["max"] - encoded["min"])


class LayerRecorder:
    """Forward hooks on every leaf module: [(name, module, output array)] in the order the layers ran.

    A leaf called twice in one forward (a ReLU shared by a ResNet block) appears twice, the second as
    'name (call 2)'. Use as a context manager; the hooks are removed on leaving it.
    """

    def __init__(self, model):
        self.layers = named_layers(model)
        self.outputs = []

    def __enter__(self):
        calls = {}

        def hook_for(name):
            def keep(module, inputs, output):
                calls[name] = calls.get(name, 0) + 1
                shown = name if calls[name] == 1 else f"{name} (call {calls[name]})"
                self.outputs.append((shown, module, output.data))
            return keep

        self.handles = [module.register_forward_hook(hook_for(name)) for name, module in self.layers]
        return self

    def __exit__(self, *exc_info):
        for handle in self.handles:
            handle.remove()


def filter_layers(recorded):
    """{output name: name of the Conv2D whose filters made its channels} for each (1, C, h, w) output.

    That is the latest Conv2D called at or before it, when it has C output channels (a ReLU, a pooling
    or a batch norm layer keeps its channels); None otherwise (no convolution yet, or a layer that
    changed the channels since).
    """
    found, latest = {}, None
    for name, module, output in recorded:
        if isinstance(module, nn.Conv2D):
            latest = (name, module.out_channels)
        if output.ndim == 4:
            found[name] = latest[0] if latest is not None and latest[1] == output.shape[1] else None
    return found


class Inspector:
    """A model opened for the page: its summary, and predictions with every layer's output and explanations.

    model: a minicnn Module taking (N, 1, 28, 28) images (other input shapes: summary() says so and
    predict() raises RequestError). dataset: 'mnist', 'fashion-mnist' or None (class names '0'..'9',
    drawings prepared as MNIST digits). name: shown on the page. test_images: (images uint8 (N, 28, 28),
    labels (N,)) for the test-image buttons; default the dataset's test split, read from the cache when
    first asked for (never downloaded: the page works offline).
    """

    def __init__(self, model, dataset=None, name="model", test_images=None):
        self.model = model.eval()
        self.dataset = dataset
        self.name = name
        self.lock = threading.Lock()
        self.test_images = test_images
        self.misclassified_search = None  # {order, position, found}, made on the first request
        self.search_lock = threading.Lock()  # one search at a time; the model's lock is taken per batch
        self.description = self.describe_layers()

    @classmethod
    def open(cls, checkpoint, dataset=None, test_images=None):
        """An Inspector for a checkpoint path: a .npz, a run folder (its best.npz) or an .onnx file."""
        path = resolve_checkpoint(checkpoint)
        loaded = read_checkpoint(path)
        if importlib.util.find_spec("PIL") is None:
            raise ImportError('minicnn serve prepares drawings with Pillow: python3 -m pip install -e ".[images]"')
        return cls(loaded.model, dataset or loaded.dataset, path.name, test_images)

    # ----- the model's description -------------------------------------------------------------------

    @property
    def input_shape(self):
        shape = getattr(self.model, "input_shape", None)
        return tuple(shape) if shape else INPUT_SHAPE

    def describe_layers(self):
        """What summary() reports, found by one forward pass of a black image (None where the input is not 1x28x28)."""
        if self.input_shape != INPUT_SHAPE:
            return None
        with self.lock, LayerRecorder(self.model) as recorder, no_grad():
            logits = self.model(image_batch(self.model, np.zeros(INPUT_SHAPE, dtype=np.float32)))
        if logits.ndim != 2:
            raise ShapeError(f"{self.name}: the model should return logits (N, classes), got shape {logits.shape}")
        filters = filter_layers(recorder.outputs)
        counted, layers = set(), []
        for name, module, output in recorder.outputs:
            first_call = id(module) not in counted
            counted.add(id(module))
            layers.append({
                "name": name, "type": type(module).__name__, "output_shape": list(output.shape[1:]),
                "parameters": sum(p.numel() for p in module.parameters()) if first_call else 0,
                "filter_layer": filters.get(name),
            })
        try:
            default_layer = grad_cam_layer(self.model)[0]
        except ValueError:  # no Conv2D: no feature maps to explain
            default_layer = None
        leaf_names = {name for name, _ in named_layers(self.model)}  # a second call's name is not one
        return {"layers": layers, "classes": int(logits.shape[1]),
                "grad_cam_layers": [layer["name"] for layer in layers
                                    if len(layer["output_shape"]) == 3 and layer["name"] in leaf_names],
                "grad_cam_default": default_layer}

    def class_names(self):
        if self.dataset in data.DATASETS:
            return list(data.class_names(self.dataset))
        return [str(index) for index in range(self.description["classes"])]

    def summary(self):
        """The model as the page shows it: {'model', 'dataset', 'supported', 'message', 'input_shape',
        'classes', 'layers': [{'name', 'type', 'output_shape', 'parameters', 'filter_layer'}],
        'total_parameters', 'grad_cam_layers', 'grad_cam_default'}."""
        total = sum(parameter.numel() for parameter in self.model.parameters())
        base = {"model": self.name, "dataset": self.dataset, "input_shape": list(self.input_shape),
                "total_parameters": int(total)}
        if self.description is None:
            return {**base, "supported": False, "message": self.unsupported_message(), "classes": [], "layers": [],
                    "grad_cam_layers": [], "grad_cam_default": None}
        return {**base, "supported": True, "message": None, "classes": self.class_names(),
                "layers": self.description["layers"], "grad_cam_layers": self.description["grad_cam_layers"],
                "grad_cam_default": self.description["grad_cam_default"]}

    def unsupported_message(self):
        shape = "x".join(map(str, self.input_shape))
        return (f"{self.name} takes {shape} inputs; this page draws and shows 1x28x28 images (models trained on "
                f"MNIST or Fashion-MNIST)")

    # ----- predictions ---------------------------------------------------------------------------------

    def prepare_drawing(self, drawing):
        """A grey drawing (H, W) -> the (28, 28) float32 input, made as MNIST digits (or Fashion-MNIST
        products) were: see minicnn.pictures.prepare."""
        dataset = self.dataset if self.dataset in DRAWABLE_DATASETS else "mnist"
        return prepare(drawing, dataset)

    def predict(self, pixels=None, drawing=None, activations=True, saliency=True, layer=None):
        """Classify one image and say why.

        pixels: the model's input (28, 28) float in [0, 1]; or drawing: a grey picture (H, W), prepared
        by prepare_drawing. Values are checked by the server; here they are trusted.
        Returns {'input': (28, 28) nested lists, 'probabilities': [...], 'predicted': index, 'class': name
        (both None when the probabilities are NaN or infinite),
        'classes': names, 'layers': [{'name', 'type', ...encode_maps(output) for (C, h, w) outputs,
        or 'values': [...] for vectors}] (activations=True), 'saliency': encode_maps((28, 28)) and
        'grad_cam': {'layer', 'map_shape', 'placed', ...encode_maps((28, 28))} (saliency=True; Grad-CAM
        of `layer`, default the last convolution's output, None for a model without convolutions)}.
        """
        if self.description is None:
            raise RequestError(self.unsupported_message())
        if layer is not None and layer not in self.description["grad_cam_layers"]:
            raise RequestError(f"layer {layer!r} has no feature maps to explain; choose one of "
                               f"{self.description['grad_cam_layers']}")
        image = self.prepare_drawing(drawing) if pixels is None else np.asarray(pixels, dtype=np.float32)
        image = image.reshape(INPUT_SHAPE)
        with self.lock:
            result = self.run_model(image, activations, saliency, layer)
        result["input"] = np.round(image[0], 4).tolist()
        return result

    def run_model(self, image, activations, saliency, layer):
        """The passes over the model for predict(); the caller holds the lock.

        One forward and one backward pass give everything: the layers' outputs are recorded during
        grad_cam's own forward pass, and its backward pass, from the predicted class's logit, leaves in
        the input's .grad exactly the gradient saliency_map takes (|gradient|, largest over channels).
        A model without convolutions has no Grad-CAM; saliency_map's pass is used then.
        """
        seen = {}

        def keep_input_and_logits(module, inputs, output):
            seen["input"], seen["logits"] = inputs[0], output.data

        handle = self.model.register_forward_hook(keep_input_and_logits)
        try:
            with LayerRecorder(self.model) if activations else contextlib.nullcontext() as recorder:
                cam = None
                if saliency and self.description["grad_cam_default"] is not None:
                    _, cam_values, details = grad_cam(self.model, image, layer=layer, details=True)
                    gradient = backend.to_numpy(seen["input"].grad[0]).astype(np.float64)  # (C, H, W)
                    saliency_values = np.abs(gradient).max(axis=0)
                    cam = {"layer": details["layer"], "map_shape": list(details["map_shape"]),
                           "placed": details["placed"], **encode_maps(cam_values)}
                elif saliency:
                    _, saliency_values = saliency_map(self.model, image)
                else:
                    with no_grad():
                        self.model(image_batch(self.model, image))
        finally:
            handle.remove()
        logits = backend.to_numpy(seen["logits"]).astype(np.float64)
        probabilities = self.probabilities(logits)[0]
        names = self.class_names()
        if np.isfinite(probabilities).all():
            predicted = int(probabilities.argmax())
            shown = names[predicted] if predicted < len(names) else str(predicted)
        else:  # a diverged model: argmax would name whichever class comes first; the server adds a warning
            predicted = shown = None
        result = {"probabilities": probabilities.tolist(), "predicted": predicted, "class": shown, "classes": names}
        if activations:
            result["layers"] = [self.layer_output(name, module, output) for name, module, output in recorder.outputs]
        if saliency:
            result["saliency"] = encode_maps(saliency_values)
            result["grad_cam"] = cam
        return result

    def probabilities(self, logits):
        """Softmax of the logits; a model that ends in Softmax (an ONNX export) gives probabilities already."""
        last = named_layers(self.model)[-1][1]
        return logits if isinstance(last, nn.Softmax) else softmax(logits)

    @staticmethod
    def layer_output(name, module, output):
        values = np.asarray(output[0], dtype=np.float64)
        entry = {"name": name, "type": type(module).__name__}
        if values.ndim == 3:
            return {**entry, "kind": "maps", **encode_maps(values)}
        return {**entry, "kind": "vector", "shape": list(values.shape), "values": np.round(values, 5).ravel().tolist()}

    def filters(self, layer, channel):
        """The weights of one filter of a Conv2D layer: {'layer', 'channel', 'shape': [in_channels, kh, kw],
        'values': nested lists, 'bias'}."""
        modules = dict(named_layers(self.model))
        module = modules.get(layer)
        if not isinstance(module, nn.Conv2D):
            convolutions = [name for name, m in modules.items() if isinstance(m, nn.Conv2D)]
            raise RequestError(f"layer {layer!r} is not a Conv2D layer; the convolutions are {convolutions}")
        if not 0 <= channel < module.out_channels:
            raise RequestError(f"channel {channel} is outside layer {layer!r}'s 0..{module.out_channels - 1}")
        with self.lock:
            weight = np.asarray(module.weight.numpy()[channel], dtype=np.float64)
            bias = None if module.bias is None else float(module.bias.numpy()[channel])
        return {"layer": layer, "channel": channel, "shape": list(weight.shape),
                "values": np.round(weight, 5).tolist(), "bias": bias}

    # ----- test images ---------------------------------------------------------------------------------

    def test_set(self):
        if self.test_images is None:
            if self.dataset not in data.DATASETS:
                raise RequestError(f"{self.name} does not name the dataset it was trained on, so there are no "
                                   "test images (pass --dataset)", status=404)
            try:
                self.test_images = data.load_dataset(self.dataset, "test", download=False)
            except (OSError, ValueError):  # DataError: not in the cache. Its message names the cache's folder,
                # which a browser on another machine should not learn: the answer names the command instead.
                raise RequestError(f"no test images: the {self.dataset} test set is not in this server's data "
                                   f"cache (run `minicnn fetch {self.dataset}` where the server runs)",
                                   status=404) from None
        return self.test_images

    def test_image(self, kind="random", index=None, rng=None):
        """One test image: {'index', 'label', 'class', 'pixels': (28, 28) lists in [0, 1]}.

        kind: 'random', 'misclassified' (one the model gets wrong, with 'predicted') or 'index' (give index).
        """
        images, labels = self.test_set()
        rng = rng or np.random.default_rng()
        extra = {}
        if kind == "index":
            if index is None or not 0 <= index < len(images):
                raise RequestError(f"index must lie in [0, {len(images)}), got {index}")
        elif kind == "random":
            index = int(rng.integers(len(images)))
        elif kind == "misclassified":
            with self.search_lock:
                index, predicted = self.find_misclassified(images, labels, rng)
            extra = {"predicted": predicted}
        else:
            raise RequestError(f"kind must be 'random', 'misclassified' or 'index', got {kind!r}")
        names = self.class_names()
        label = int(labels[index])
        return {"index": int(index), "label": label, "class": names[label] if label < len(names) else str(label),
                "pixels": np.round(images[index] / 255, 4).tolist(), **extra}

    def find_misclassified(self, images, labels, rng):
        """(index, predicted) of a test image the model gets wrong.

        The test set is walked in a random order, one batch at a time, until a misclassification not
        yet shown turns up; once all are found, a random one of them. Classifying the whole set up front
        would keep every other request waiting for seconds.
        """
        if self.description is None:
            raise RequestError(self.unsupported_message())
        if self.misclassified_search is None:
            self.misclassified_search = {"order": rng.permutation(len(images)), "position": 0, "found": []}
        search = self.misclassified_search
        while search["position"] < len(images):
            chosen = search["order"][search["position"]:search["position"] + MISCLASSIFIED_BATCH]
            search["position"] += len(chosen)
            with self.lock, no_grad():
                logits = self.model(image_tensor(self.model, images[chosen]))
            predicted = backend.to_numpy(logits.data).argmax(axis=1)
            wrong = [(int(i), int(p)) for i, p in zip(chosen, predicted) if p != labels[i]]
            search["found"] += wrong
            if wrong:
                return wrong[0]
        if not search["found"]:
            raise RequestError(f"{self.name} classifies all {len(images)} test images correctly", status=404)
        return search["found"][int(rng.integers(len(search["found"])))]


def image_tensor(model, images):
    """uint8 images (N, 28, 28) as the model's input: a float Tensor (N, 1, 28, 28) in [0, 1] on its device."""
    parameters = model.parameters()
    dtype = parameters[0].dtype if parameters else backend.DEFAULT_FLOAT
    return Tensor(backend.to_device((images[:, None] / np.float32(255)).astype(dtype), model.device))
