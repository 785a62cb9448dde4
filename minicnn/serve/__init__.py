"""See a trained CNN think: a local page where you draw a digit and watch every layer respond.

    minicnn serve runs/latest/best.npz            # prints http://127.0.0.1:8000/ ; Ctrl-C stops
    minicnn serve cnn.onnx --port 0 --host 127.0.0.1

The page (HTML, CSS and JavaScript in minicnn/serve/static, no CDN, no build step) draws with mouse,
pen or touch, shows the 28x28 input the model sees, the class probabilities while you draw, every
layer's output (feature maps as grids, vectors as bars; click a map to see it large with its filter),
the saliency map and Grad-CAM of a chosen layer, random and misclassified test images, and the summary.
Drawings are prepared on the server by minicnn.pictures.prepare (bounding box to 20x20, centre of mass
at (14, 14)), so the page and the API give the same input for the same drawing. Pillow is needed
for that (the `images` extra); the HTTP server is waitress (the `serve` extra).

The JSON API (errors are {"error": "one line"} with a 4xx status; 5xx only for a bug):

    GET  /api/summary
         -> {model, dataset, supported, message, input_shape, classes, total_parameters,
             layers: [{name, type, output_shape, parameters, filter_layer}], grad_cam_layers, grad_cam_default}
    POST /api/predict   {"pixels": 28x28 numbers in [0, 1]}  or  {"drawing": HxW numbers 0..255, sides <= 512}
                        optional: "activations": true, "saliency": true, "layer": a name from grad_cam_layers
         -> {input: 28x28, probabilities, predicted, class, classes,
             layers: [{name, type, kind: "maps", shape: [C, h, w], min, max, data} or
                      {name, type, kind: "vector", shape: [n], values}],
             saliency: {shape: [28, 28], min, max, data},
             grad_cam: {layer, map_shape, placed, shape: [28, 28], min, max, data}}
         maps are base64 of uint8 levels, 0 at min and 255 at max (see decode_maps)
    GET  /api/test-image?kind=random | kind=misclassified | index=N
         -> {index, label, class, pixels: 28x28 in [0, 1], predicted, prediction: as /api/predict answers}
    GET  /api/filter?layer=NAME&channel=K   -> {layer, channel, shape: [in_channels, kh, kw], values, bias}

    curl -s localhost:8000/api/summary
    curl -s -X POST localhost:8000/api/predict -d '{"pixels": [[0, ...], ...], "activations": false}'

Bodies above MAX_BODY_BYTES get 413; malformed JSON, wrong shapes or types, NaN or infinite values 400;
request headers over 32 KiB 431, a request target over MAX_TARGET_BYTES 414, an unknown method or
transfer coding 501, two Content-Length or Host headers 400: every error is {"error": "one line"}.
An answer with NaN or infinite numbers (a model whose training diverged) gives them as null and says
so in a 'warning' field (replace_non_finite and non_finite_warning do that, for predict --json too).
"""

from .finite import non_finite_warning, replace_non_finite
from .inspector import Inspector, RequestError, decode_maps, encode_maps
from .server import MAX_BODY_BYTES, MAX_DRAWING_SIDE, MAX_TARGET_BYTES, make_server, serve, serve_in_thread

__all__ = ["Inspector", "MAX_BODY_BYTES", "MAX_DRAWING_SIDE", "MAX_TARGET_BYTES", "RequestError", "decode_maps",
           "encode_maps", "make_server", "non_finite_warning", "replace_non_finite", "serve", "serve_in_thread"]
