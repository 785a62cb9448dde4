// minicnn serve: the page. Plain JavaScript, no library and no build step; it talks only to its own server.
// The drawing is sent as grey values; the server prepares it as MNIST digits were made, so the page and
// the JSON API always agree on what the model sees. window.minicnn holds the last summary and answer.
"use strict";

const PAD_SEND_SIDE = 112;       // the drawing is sent at this size (the server crops and scales it to 20x20)
const STROKE_WIDTH = 18;         // on the 280 px pad: about MNIST's 2-3 px after scaling
const THROTTLE_MS = 90;          // at most one prediction request this often while drawing
const MAX_TILE_PX = 72;          // the largest a feature map is drawn in the layer grids

const state = { summary: null, last: null, strokes: [], testImage: null, inFlight: false, pending: false,
                lastSent: 0, timer: null, zoom: null, request: null };
window.minicnn = state;

const $ = (id) => document.getElementById(id);

// ----- colours -------------------------------------------------------------------------------------
// A perceptual dark-to-bright map (close to matplotlib's "inferno") for activations and saliency.
const INFERNO = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                 [250, 193, 39], [252, 255, 164]];
const PALETTE = buildPalette(INFERNO);

function buildPalette(stops) {
  const palette = new Uint8ClampedArray(256 * 3);
  for (let level = 0; level < 256; level++) {
    const position = level / 255 * (stops.length - 1);
    const low = Math.min(Math.floor(position), stops.length - 2), t = position - low;
    for (let c = 0; c < 3; c++) palette[level * 3 + c] = stops[low][c] * (1 - t) + stops[low + 1][c] * t;
  }
  return palette;
}

// Signed values (filter weights): blue below zero, white at zero, red above.
function divergingColour(value, scale) {
  const t = scale > 0 ? Math.max(-1, Math.min(1, value / scale)) : 0;
  return t < 0 ? [255 * (1 + t) + 33 * -t, 255 * (1 + t) + 102 * -t, 255 * (1 + t) + 172 * -t]
               : [255 * (1 - t) + 178 * t, 255 * (1 - t) + 24 * t, 255 * (1 - t) + 43 * t];
}

function decodeLevels(encoded) {
  const text = atob(encoded.data);
  const levels = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) levels[i] = text.charCodeAt(i);
  return levels;
}

// ----- drawing small images -----------------------------------------------------------------------------
function drawGrey(canvas, rows) {
  const height = rows.length, width = rows[0].length;
  canvas.width = width; canvas.height = height;
  const context = canvas.getContext("2d"), image = context.createImageData(width, height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    const v = Math.round(rows[y][x] * 255), i = (y * width + x) * 4;
    image.data[i] = image.data[i + 1] = image.data[i + 2] = v; image.data[i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

// A heat map (levels 0..255) laid over the grey input: the input shows where the heat is.
function drawHeat(canvas, encoded, input) {
  const [height, width] = encoded.shape, levels = decodeLevels(encoded);
  canvas.width = width; canvas.height = height;
  const context = canvas.getContext("2d"), image = context.createImageData(width, height);
  for (let i = 0; i < levels.length; i++) {
    const heat = levels[i], grey = input ? input[Math.floor(i / width)][i % width] * 255 : 0;
    for (let c = 0; c < 3; c++) image.data[i * 4 + c] = 0.6 * PALETTE[heat * 3 + c] + 0.4 * grey;
    image.data[i * 4 + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

// All C maps of a layer as one canvas: a grid of tiles one pixel apart, so one putImageData draws them.
// Up to 32 maps: 16 to a row, large; more: 32 to a row, so that a layer takes few rows.
function mapGrid(layer, availableWidth) {
  const [channels, height, width] = layer.shape, levels = decodeLevels(layer);
  const columns = Math.min(channels, channels > 32 ? 32 : 16), rows = Math.ceil(channels / columns);
  const canvas = document.createElement("canvas");
  canvas.width = columns * (width + 1) - 1; canvas.height = rows * (height + 1) - 1;
  const context = canvas.getContext("2d"), image = context.createImageData(canvas.width, canvas.height);
  image.data.fill(255);
  for (let k = 0; k < channels; k++) {
    const left = (k % columns) * (width + 1), top = Math.floor(k / columns) * (height + 1);
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
      const level = levels[(k * height + y) * width + x], i = ((top + y) * canvas.width + left + x) * 4;
      image.data[i] = PALETTE[level * 3]; image.data[i + 1] = PALETTE[level * 3 + 1]; image.data[i + 2] = PALETTE[level * 3 + 2];
    }
  }
  context.putImageData(image, 0, 0);
  const scale = Math.min(MAX_TILE_PX, Math.floor(availableWidth / columns)) / (width + 1);
  canvas.style.width = `${canvas.width * scale}px`;
  canvas.className = "maps pixelated";
  canvas.title = "click a map to see it large";
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    const x = (event.clientX - box.left) / box.width * canvas.width, y = (event.clientY - box.top) / box.height * canvas.height;
    const channel = Math.floor(y / (height + 1)) * columns + Math.floor(x / (width + 1));
    if (channel < channels) openZoom(layer.name, channel);
  });
  return canvas;
}

// A vector (a Dense layer's output) as bars around a zero line, coloured by sign.
function vectorBars(layer) {
  const values = layer.values, count = values.length;
  const barWidth = Math.max(1, Math.min(14, Math.floor(900 / count))), height = 64;
  const canvas = document.createElement("canvas");
  canvas.width = count * barWidth; canvas.height = height;
  const context = canvas.getContext("2d");
  const largest = Math.max(1e-12, ...values.map(Math.abs)), hasNegative = values.some((v) => v < 0);
  const zero = hasNegative ? height / 2 : height - 1;
  context.fillStyle = "#dde1ea"; context.fillRect(0, zero, canvas.width, 1);
  values.forEach((value, i) => {
    const length = value / largest * (hasNegative ? height / 2 - 1 : height - 1);
    context.fillStyle = value >= 0 ? "#4c6ef5" : "#e8590c";
    context.fillRect(i * barWidth, value >= 0 ? zero - length : zero, Math.max(1, barWidth - (barWidth > 3 ? 1 : 0)), Math.abs(length));
  });
  canvas.style.width = `${canvas.width}px`;
  return canvas;
}

// ----- showing an answer -------------------------------------------------------------------------------
function showProbabilities(answer) {
  const bars = $("bars");
  if (bars.childElementCount !== answer.classes.length * 3) {
    bars.textContent = "";
    answer.classes.forEach((name) => {
      const label = document.createElement("div"), track = document.createElement("div"), value = document.createElement("div");
      label.className = "label"; label.textContent = name;
      track.className = "track"; track.appendChild(document.createElement("div")).className = "fill";
      value.className = "value";
      bars.append(label, track, value);
    });
  }
  answer.probabilities.forEach((p, i) => {
    const [label, track, value] = [bars.children[i * 3], bars.children[i * 3 + 1], bars.children[i * 3 + 2]];
    track.firstChild.style.width = `${((p || 0) * 100).toFixed(1)}%`;
    value.textContent = p === null ? "–" : `${(p * 100).toFixed(1)}%`;
    for (const element of [label, track, value]) element.classList.toggle("best", i === answer.predicted);
  });
  const prediction = $("prediction");
  if (answer.predicted === null) {  // NaN or infinite outputs: the answer's warning says why
    prediction.textContent = "?"; delete prediction.dataset.predicted; return;
  }
  prediction.textContent = answer.class;
  prediction.dataset.predicted = answer.class;
  const note = document.createElement("small");
  note.textContent = ` ${(answer.probabilities[answer.predicted] * 100).toFixed(1)}%`;
  prediction.appendChild(note);
}

function showLayers(answer) {
  const holder = $("layers");
  holder.textContent = "";
  for (const layer of answer.layers) {
    const block = document.createElement("div"), title = document.createElement("h3"), detail = document.createElement("small");
    block.className = "layer";
    title.textContent = layer.name;
    if (layer.kind === "maps") {
      detail.textContent = ` ${layer.shape.join(" × ")}  (values ${layer.min.toPrecision(3)} to ${layer.max.toPrecision(3)})`;
      title.appendChild(detail); block.append(title, mapGrid(layer, holder.clientWidth || 900));
    } else {
      detail.textContent = ` ${layer.shape[0]} values`;
      title.appendChild(detail); block.append(title, vectorBars(layer));
    }
    holder.appendChild(block);
  }
}

function showAnswer(answer) {
  state.last = answer;
  drawGrey($("input"), answer.input);
  showProbabilities(answer);
  if (answer.saliency) drawHeat($("saliency"), answer.saliency, answer.input);
  if (answer.grad_cam) {
    drawHeat($("gradcam"), answer.grad_cam, answer.input);
    $("cam-note").textContent = `Grad-CAM of ${answer.grad_cam.layer}: a ${answer.grad_cam.map_shape.join("×")} map, ` +
      (answer.grad_cam.placed === "receptive fields" ? "each cell drawn at the centre of its receptive field."
                                                      : "stretched over the image.");
  }
  if (answer.layers) showLayers(answer);
  if (state.zoom) drawZoomMap();
  document.body.dataset.state = "predicted";
}

function clearAnswer() {
  state.last = null;
  for (const id of ["input", "saliency", "gradcam"]) {
    const canvas = $(id); canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
  $("prediction").textContent = "–";
  delete $("prediction").dataset.predicted;
  $("bars").textContent = ""; $("layers").textContent = ""; $("cam-note").textContent = "";
  document.body.dataset.state = "empty";
}

function showMessage(text) {
  const message = $("message");
  message.hidden = !text;
  message.textContent = text || "";
}

// ----- talking to the server -------------------------------------------------------------------------
async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `${path}: HTTP ${response.status}`);
  return answer;
}

function currentRequest() {
  const layer = $("cam-layer").value || null;
  if (state.testImage) return { pixels: state.testImage.pixels, layer };
  if (!state.strokes.length) return null;
  return { drawing: padPixels(), layer };
}

// Throttled: at most one request in flight and one every THROTTLE_MS; the newest drawing always wins.
function schedulePrediction(now = false) {
  if (state.inFlight) { state.pending = true; return; }
  const wait = now ? 0 : Math.max(0, THROTTLE_MS - (performance.now() - state.lastSent));
  if (state.timer !== null) return;
  state.timer = setTimeout(sendPrediction, wait);
}

async function sendPrediction() {
  state.timer = null;
  const request = currentRequest();
  if (!request) { clearAnswer(); return; }
  state.inFlight = true; state.pending = false; state.lastSent = performance.now();
  try {
    const answer = await api("/api/predict", request);
    if (!state.pending) { showAnswer(answer); showMessage(answer.warning || ""); }
  } catch (error) {
    showMessage(error.message);
  } finally {
    state.inFlight = false;
    if (state.pending) schedulePrediction();
  }
}

// ----- the drawing pad ---------------------------------------------------------------------------------
const pad = $("pad"), padContext = pad.getContext("2d");
let activePointer = null;

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

function drawStroke(points) {
  padContext.strokeStyle = padContext.fillStyle = "#fff";
  padContext.lineWidth = STROKE_WIDTH; padContext.lineCap = padContext.lineJoin = "round";
  if (points.length === 1) {
    padContext.beginPath(); padContext.arc(points[0][0], points[0][1], STROKE_WIDTH / 2, 0, 2 * Math.PI); padContext.fill();
    return;
  }
  padContext.beginPath(); padContext.moveTo(...points[0]);
  for (const point of points.slice(1)) padContext.lineTo(...point);
  padContext.stroke();
}

function redrawPad() {
  padContext.fillStyle = "#000"; padContext.fillRect(0, 0, pad.width, pad.height);
  if (state.testImage) {
    const small = document.createElement("canvas");
    drawGrey(small, state.testImage.pixels);
    padContext.imageSmoothingEnabled = false;
    padContext.drawImage(small, 0, 0, pad.width, pad.height);
  }
  state.strokes.forEach(drawStroke);
}

// The pad as rows of grey values 0..255 at PAD_SEND_SIDE x PAD_SEND_SIDE (the browser's smooth downscale).
function padPixels() {
  const small = document.createElement("canvas");
  small.width = small.height = PAD_SEND_SIDE;
  const context = small.getContext("2d");
  context.drawImage(pad, 0, 0, PAD_SEND_SIDE, PAD_SEND_SIDE);
  const data = context.getImageData(0, 0, PAD_SEND_SIDE, PAD_SEND_SIDE).data, rows = [];
  for (let y = 0; y < PAD_SEND_SIDE; y++) {
    const row = new Array(PAD_SEND_SIDE);
    for (let x = 0; x < PAD_SEND_SIDE; x++) row[x] = data[(y * PAD_SEND_SIDE + x) * 4];
    rows.push(row);
  }
  return rows;
}

pad.addEventListener("pointerdown", (event) => {
  if (!state.summary || !state.summary.supported || activePointer !== null) return;
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  activePointer = event.pointerId;
  pad.setPointerCapture(event.pointerId);
  if (state.testImage) { state.testImage = null; setTruth(null); }
  state.strokes.push([padPoint(event)]);
  redrawPad();
  schedulePrediction();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== activePointer) return;
  const stroke = state.strokes[state.strokes.length - 1];
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of events.length ? events : [event]) stroke.push(padPoint(each));
  drawStroke(stroke.slice(-1 - (events.length || 1)));
  schedulePrediction();
});

function endStroke(event) {
  if (event.pointerId !== activePointer) return;
  activePointer = null;
  schedulePrediction(true);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

$("undo").addEventListener("click", () => {
  if (state.testImage) { state.testImage = null; setTruth(null); } else state.strokes.pop();
  redrawPad(); schedulePrediction(true);
});
$("clear").addEventListener("click", () => {
  state.strokes = []; state.testImage = null; setTruth(null); redrawPad(); schedulePrediction(true);
});

// ----- test images ---------------------------------------------------------------------------------------
function setTruth(image) {
  const truth = $("truth");
  const wrong = Boolean(image && image.predicted !== null && image.predicted !== image.label);
  truth.classList.toggle("wrong", wrong);
  truth.dataset.label = image ? image.class : "";
  truth.textContent = !image ? "" : `Test image ${image.index}: true label ${image.class}` +
    (wrong ? ` (the model says ${state.summary.classes[image.predicted]})` : "");
}

async function loadTestImage(kind) {
  try {
    const image = await api(`/api/test-image?kind=${kind}`);
    state.strokes = []; state.testImage = image;
    setTruth(image); redrawPad(); showMessage(""); schedulePrediction(true);
  } catch (error) {
    showMessage(error.message);
  }
}
$("random").addEventListener("click", () => loadTestImage("random"));
$("wrong").addEventListener("click", () => loadTestImage("misclassified"));
$("cam-layer").addEventListener("change", () => schedulePrediction(true));

// ----- one feature map, large, with its filter ---------------------------------------------------------------
function openZoom(layerName, channel) {
  state.zoom = { layerName, channel };
  $("zoom").hidden = false;
  drawZoomMap();
  drawZoomFilter();
}

function drawZoomMap() {
  const layer = state.last && state.last.layers.find((each) => each.name === state.zoom.layerName);
  if (!layer) return;
  const [, height, width] = layer.shape, levels = decodeLevels(layer), channel = state.zoom.channel;
  const canvas = $("zoom-map"), context = canvas.getContext("2d");
  canvas.width = width; canvas.height = height;
  const image = context.createImageData(width, height);
  for (let i = 0; i < height * width; i++) {
    const level = levels[channel * height * width + i];
    for (let c = 0; c < 3; c++) image.data[i * 4 + c] = PALETTE[level * 3 + c];
    image.data[i * 4 + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  $("zoom-title").textContent = `${layer.name}, channel ${channel}`;
  $("zoom-map-note").textContent = `${height}×${width} map; colours span the layer's values ${layer.min.toPrecision(3)} to ${layer.max.toPrecision(3)}`;
}

async function drawZoomFilter() {
  const description = state.summary.layers.find((each) => each.name === state.zoom.layerName);
  const canvas = $("zoom-filter"), note = $("zoom-filter-note");
  canvas.width = canvas.height = 0; canvas.style.width = "";
  if (!description || !description.filter_layer) { note.textContent = "no convolution made this map"; return; }
  try {
    const filter = await api(`/api/filter?layer=${encodeURIComponent(description.filter_layer)}&channel=${state.zoom.channel}`);
    const [inputs, kernelHeight, kernelWidth] = filter.shape;
    const columns = Math.min(inputs, 8), rows = Math.ceil(inputs / columns);
    canvas.width = columns * (kernelWidth + 1) - 1; canvas.height = rows * (kernelHeight + 1) - 1;
    const context = canvas.getContext("2d"), image = context.createImageData(canvas.width, canvas.height);
    image.data.fill(255);
    const scale = Math.max(...filter.values.flat(2).map(Math.abs));
    filter.values.forEach((kernel, k) => kernel.forEach((row, y) => row.forEach((value, x) => {
      const left = (k % columns) * (kernelWidth + 1), top = Math.floor(k / columns) * (kernelHeight + 1);
      const i = ((top + y) * canvas.width + left + x) * 4, colour = divergingColour(value, scale);
      image.data[i] = colour[0]; image.data[i + 1] = colour[1]; image.data[i + 2] = colour[2];
    })));
    context.putImageData(image, 0, 0);
    canvas.style.width = `${Math.min(420, Math.max(140, canvas.width * 12))}px`;
    note.textContent = `filter ${filter.channel} of ${filter.layer}: ${inputs} input channel${inputs > 1 ? "s" : ""} of ` +
      `${kernelHeight}×${kernelWidth} weights (blue < 0 < red, ±${scale.toPrecision(2)}), bias ${filter.bias === null ? "none" : filter.bias.toPrecision(3)}`;
  } catch (error) {
    note.textContent = error.message;
  }
}

function closeZoom() { state.zoom = null; $("zoom").hidden = true; }
$("zoom-close").addEventListener("click", closeZoom);
$("zoom").addEventListener("click", (event) => { if (event.target === $("zoom")) closeZoom(); });
document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeZoom(); });

// ----- start ---------------------------------------------------------------------------------------------
function showSummary(summary) {
  $("model-name").textContent = `${summary.model}${summary.dataset ? ` · ${summary.dataset}` : ""} · ` +
    `${summary.total_parameters.toLocaleString("en")} parameters`;
  const table = $("summary-table");
  const head = table.createTHead().insertRow();
  for (const [text, number] of [["layer", false], ["type", false], ["output shape", false], ["parameters", true]]) {
    const cell = document.createElement("th"); cell.textContent = text; if (number) cell.className = "number"; head.appendChild(cell);
  }
  const body = table.createTBody();
  const rows = [["input", "", summary.input_shape.join(" × "), 0], ...summary.layers.map((layer) =>
    [layer.name, layer.type, layer.output_shape.join(" × "), layer.parameters])];
  rows.push(["total", "", "", summary.total_parameters]);
  for (const values of rows) {
    const row = body.insertRow();
    values.forEach((value, i) => {
      const cell = row.insertCell(); cell.textContent = i === 3 ? value.toLocaleString("en") : value;
      if (i === 3) cell.className = "number";
    });
  }
  const select = $("cam-layer");
  for (const name of summary.grad_cam_layers) select.add(new Option(name, name, false, name === summary.grad_cam_default));
}

async function start() {
  clearAnswer();
  redrawPad();
  try {
    state.summary = await api("/api/summary");
  } catch (error) {
    showMessage(`cannot read the model's summary: ${error.message}`);
    return;
  }
  showSummary(state.summary);
  if (!state.summary.supported) {
    showMessage(state.summary.message);
    for (const id of ["undo", "clear", "random", "wrong"]) $(id).disabled = true;
    return;
  }
  document.body.dataset.ready = "true";
}
start();
