// The page of `backprop serve`: a canvas to draw on, and the panels that show what the network
// makes of the drawing or of a test image. All numbers come from the JSON API (/api/...).
"use strict";

const $ = (id) => document.getElementById(id);
const draw = $("draw");
const pen = draw.getContext("2d");
let current = null;   // what the panels show: { kind: "drawing" } or { kind: "test", index }
let pending = null;   // the latest request, so that an older answer never overwrites a newer one
let drawing = false;
let last = null;

function clearCanvas() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, draw.width, draw.height);
}

function status(text) { $("status").textContent = text || ""; }

// ─── drawing ──────────────────────────────────────────────────────────────────────────────────
function point(e) {
  const r = draw.getBoundingClientRect();
  return { x: (e.clientX - r.left) * draw.width / r.width, y: (e.clientY - r.top) * draw.height / r.height };
}

draw.addEventListener("pointerdown", (e) => {
  drawing = true;
  last = point(e);
  draw.setPointerCapture?.(e.pointerId);
  pen.beginPath();
  pen.arc(last.x, last.y, pen.lineWidth / 2, 0, 2 * Math.PI);
  pen.fillStyle = "#000";
  pen.fill();
});
draw.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const p = point(e);
  pen.beginPath();
  pen.moveTo(last.x, last.y);
  pen.lineTo(p.x, p.y);
  pen.stroke();
  last = p;
});
function endStroke() {
  if (!drawing) return;
  drawing = false;
  current = { kind: "drawing" };
  predictDrawing();
}
draw.addEventListener("pointerup", endStroke);
draw.addEventListener("pointerleave", endStroke);

$("clear").addEventListener("click", () => {
  clearCanvas();
  current = null;
  $("source").textContent = "draw with the mouse or a finger";
});

// ─── requests ─────────────────────────────────────────────────────────────────────────────────
function chosenClass() {
  const v = $("class").value;
  return v === "" ? null : Number(v);
}

async function call(url, options) {
  const request = fetch(url, options).then(async (response) => {
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  });
  pending = request;
  try {
    const result = await request;
    if (pending === request) { status(""); return result; }
  } catch (err) {
    if (pending === request) status(err.message);
  }
  return null;
}

async function predictDrawing() {
  const image = pen.getImageData(0, 0, draw.width, draw.height).data;
  const pixels = new Array(draw.width * draw.height);
  for (let k = 0; k < pixels.length; k++) {
    pixels[k] = Math.round((image[4 * k] + image[4 * k + 1] + image[4 * k + 2]) / 3);
  }
  const result = await call("/api/predict", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ width: draw.width, height: draw.height, pixels, class: chosenClass() }),
  });
  if (result) {
    $("source").textContent = "your drawing";
    show(result);
  }
}

async function showTest(index) {
  const c = chosenClass();
  const result = await call(`/api/test/${index}` + (c === null ? "" : `?class=${c}`));
  if (result) {
    current = { kind: "test", index };
    $("index").value = index;
    $("source").textContent = `test image ${result.index} (label ${result.label})`;
    show(result);
  }
}

// ─── panels ───────────────────────────────────────────────────────────────────────────────────
function paint(canvas, colour) {
  const g = canvas.getContext("2d");
  const img = g.createImageData(28, 28);
  for (let k = 0; k < 784; k++) {
    const [r, gr, b] = colour(k);
    img.data.set([r, gr, b, 255], 4 * k);
  }
  g.putImageData(img, 0, 0);
}

function show(r) {
  $("predicted").textContent = String(r.predicted);
  paint($("input28"), (k) => [r.input28[k], r.input28[k], r.input28[k]]);

  const bars = $("bars");
  bars.replaceChildren(...r.probabilities.map((p, c) => {
    const row = document.createElement("div");
    row.className = "bar" + (c === r.predicted ? " top" : "");
    row.dataset.class = c;
    row.innerHTML = `<span>${c}</span><div><div class="fill" style="width:${(100 * p).toFixed(1)}%"></div></div><span>${p.toFixed(3)}</span>`;
    return row;
  }));

  const acts = $("activations");
  acts.replaceChildren();
  for (const layer of r.activations) {
    const top = Math.max(1e-12, ...layer.values);
    for (const v of layer.values) {
      const cell = document.createElement("div");
      cell.className = "cell";
      const level = Math.round(255 * Math.max(0, v) / top);
      cell.style.background = `rgb(${level}, ${level}, ${level})`;
      cell.title = `${layer.name}: ${v.toFixed(3)}`;
      acts.appendChild(cell);
    }
  }
  $("activations-title").textContent = r.activations.length
    ? `${r.activations.map((a) => `${a.name} (${a.values.length})`).join(", ")}, brighter for larger`
    : "this network has no hidden layer";

  // the heat map: the digit in grey, the negative gradient over it in red (more ink here makes the
  // class likelier) and blue (less likely), scaled to the largest magnitude
  const top = Math.max(1e-12, ...r.gradient.map(Math.abs));
  paint($("heatmap"), (k) => {
    const grey = r.input28[k] * 0.35;
    const v = -r.gradient[k] / top;
    return v >= 0
      ? [grey + (255 - grey) * v, grey * (1 - v), grey * (1 - v)]
      : [grey * (1 + v), grey * (1 + v), grey - (255 - grey) * v];
  });
  $("heatmap").dataset.drawn = "true";
  $("heatmap").dataset.class = String(r.gradientClass);
  $("gradient-class").textContent = String(r.gradientClass);
}

$("class").addEventListener("change", () => {
  if (current?.kind === "drawing") predictDrawing();
  else if (current?.kind === "test") showTest(current.index);
});
$("show").addEventListener("click", () => showTest(Number($("index").value)));
$("index").addEventListener("keydown", (e) => { if (e.key === "Enter") showTest(Number($("index").value)); });

// ─── start ────────────────────────────────────────────────────────────────────────────────────
async function start() {
  clearCanvas();
  pen.lineWidth = 18;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.strokeStyle = "#000";
  const info = await call("/api/info");
  if (info) {
    $("model").textContent = `network ${info.layers.join(" → ")} → SoftmaxWithLoss; ${info.testCount} test images`;
    $("index").max = info.testCount - 1;
  }
  const wrong = await call("/api/misclassified");
  if (wrong) {
    $("misclassified-title").textContent = `misclassified test images: ${wrong.count} of ${wrong.total} (label → predicted)`;
    $("misclassified").replaceChildren(...wrong.items.slice(0, 200).map((m) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `#${m.index}: ${m.label}→${m.predicted}`;
      b.addEventListener("click", () => showTest(m.index));
      return b;
    }));
  }
  // /#test=N opens test image N (a link to share, or a screenshot to take)
  const asked = /^#test=(\d+)$/.exec(location.hash);
  if (asked) showTest(Number(asked[1]));
}
start();
