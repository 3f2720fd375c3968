// vaekit latent explorer: sliders and a clickable latent map drive POST /api/decode.
"use strict";

const state = { info: null, z: [], inFlight: false, pending: false, colours: [] };
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function fmt(v) { return (v >= 0 ? " " : "") + v.toFixed(2); }

function buildSliders() {
  const { order, kl_per_dim: kl, limit } = state.info;
  const box = $("sliders");
  box.replaceChildren();
  for (const dim of order) {
    const row = document.createElement("div");
    row.className = "slider";
    const label = document.createElement("label");
    label.htmlFor = `z${dim}`;
    label.textContent = `z${dim + 1} `;
    if (kl) {
      const span = document.createElement("span");
      span.className = "kl";
      span.textContent = kl[dim].toFixed(2);
      label.append(span);
    }
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id: `z${dim}`, min: -limit, max: limit, step: 0.01, value: 0 });
    input.dataset.dim = dim;
    const out = document.createElement("output");
    out.id = `z${dim}-value`;
    out.textContent = fmt(0);
    input.addEventListener("input", () => {
      state.z[dim] = Number(input.value);
      out.textContent = fmt(state.z[dim]);
      requestDecode();
    });
    row.append(label, input, out);
    box.append(row);
  }
}

function setZ(z) {
  state.z = z.slice();
  for (let dim = 0; dim < z.length; dim++) {
    const input = $(`z${dim}`);
    input.value = z[dim];
    $(`z${dim}-value`).textContent = fmt(Number(input.value));
  }
  requestDecode();
}

// At most one decode in flight; the latest position wins.
async function requestDecode() {
  drawMap();
  if (state.inFlight) { state.pending = true; return; }
  state.inFlight = true;
  try {
    const body = await api("/api/decode", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(state.info.conditional ? { z: state.z, label: state.label } : { z: state.z }),
    });
    showDecoded(body, $("decoded"));
    showError("");
  } catch (err) {
    showError(`decode failed: ${err.message}`);
  } finally {
    state.inFlight = false;
    if (state.pending) { state.pending = false; requestDecode(); }
  }
}

function showDecoded(body, img) {
  if (body.image) {
    img.src = body.image;
  } else {
    const pre = $("values");
    pre.hidden = false;
    pre.textContent = body.values.map((v, i) => `x${i + 1} = ${v.toFixed(4)}`).join("\n");
  }
}

function colourOf(label) { return state.colours[((label % 10) + 10) % 10]; }

function buildLegend() {
  const labels = state.info.map.labels;
  if (!labels) return;
  const unique = [...new Set(labels)].sort((a, b) => a - b).slice(0, 20);
  for (const label of unique) {
    const item = document.createElement("span");
    item.style.setProperty("--swatch", colourOf(label));
    item.textContent = String(label);
    $("legend").append(item);
  }
}

// -- the map ---------------------------------------------------------------------------------
function mapFrame() {
  const pts = state.info.map.points;
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  if (!pts.length) { [x0, x1, y0, y1] = [-3, 3, -3, 3]; }
  const padX = (x1 - x0) * 0.08 || 1, padY = (y1 - y0) * 0.08 || 1;
  return { x0: x0 - padX, x1: x1 + padX, y0: y0 - padY, y1: y1 + padY };
}

function toCanvas(frame, canvas, x, y) {
  return [(x - frame.x0) / (frame.x1 - frame.x0) * canvas.width,
          (1 - (y - frame.y0) / (frame.y1 - frame.y0)) * canvas.height];
}

// Projected position of z: (z - mean) . component_k, k = 1, 2
function project(z) {
  const { mean, components } = state.info.map;
  return components.map((c) => c.reduce((s, ck, j) => s + ck * (z[j] - mean[j]), 0));
}

function drawMap() {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  const frame = state.frame;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const { points, labels } = state.info.map;
  for (let i = 0; i < points.length; i++) {
    const [cx, cy] = toCanvas(frame, canvas, points[i][0], points[i][1]);
    ctx.fillStyle = labels ? colourOf(labels[i]) : "#3b6ea8";
    ctx.globalAlpha = 0.7;
    ctx.fillRect(cx - 2, cy - 2, 4, 4);
  }
  ctx.globalAlpha = 1;
  const p = project(state.z);
  const [mx, my] = toCanvas(frame, canvas, p[0], p.length > 1 ? p[1] : 0);
  ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.arc(mx, my, 7, 0, 2 * Math.PI); ctx.stroke();
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.arc(mx, my, 8.5, 0, 2 * Math.PI); ctx.stroke();
}

// A click at map point (a, b) decodes z = mean + a * component_1 + b * component_2.
function onMapClick(event) {
  const canvas = $("map");
  const rect = canvas.getBoundingClientRect();
  const cx = (event.clientX - rect.left) / rect.width * canvas.width;
  const cy = (event.clientY - rect.top) / rect.height * canvas.height;
  const f = state.frame;
  const a = f.x0 + cx / canvas.width * (f.x1 - f.x0);
  const b = f.y0 + (1 - cy / canvas.height) * (f.y1 - f.y0);
  const { mean, components } = state.info.map;
  const coords = [a, b];
  setZ(mean.map((m, j) => components.reduce((s, c, k) => s + coords[k] * c[j], m)));
}

// -- test examples -----------------------------------------------------------------------------
async function loadExample(index) {
  try {
    const body = await api(`/api/example?index=${index}`);
    if (body.image) $("input").src = body.image;
    $("input-caption").textContent = `test example ${body.index}` + (body.label === null ? "" : ` (label ${body.label})`);
    $("example-info").textContent = `z set to E_q[z|x] of test example ${body.index}.`;
    setZ(body.z);
    showError("");
  } catch (err) {
    showError(`could not load the example: ${err.message}`);
  }
}

async function main() {
  state.colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22", "#17becf"];
  try {
    state.info = await api("/api/info");
  } catch (err) {
    showError(`could not reach the explorer server: ${err.message}`);
    return;
  }
  const info = state.info;
  $("run").textContent = info.run;
  $("summary").textContent = `latent_dim ${info.latent_dim} · data ${info.data_shape.join("×")} · ` +
    `${info.num_examples} test examples`;
  $("map-name").textContent = `Test-set posterior means; ${info.map.name}.`;
  if (!info.is_image) { document.querySelector(".images").hidden = true; }
  $("example").max = info.num_examples - 1;
  state.frame = mapFrame();
  buildLegend();
  state.z = new Array(info.latent_dim).fill(0);
  buildSliders();
  if (info.conditional) {  // a conditional model decodes z with the chosen class y
    state.label = 0;
    const select = $("class");
    for (let c = 0; c < info.num_classes; c++) {
      const option = document.createElement("option");
      option.value = c;
      option.textContent = info.class_names ? info.class_names[c] : String(c);
      select.append(option);
    }
    select.addEventListener("change", () => { state.label = Number(select.value); requestDecode(); });
    $("class-row").hidden = false;
  }
  $("map").addEventListener("click", onMapClick);
  $("load-example").addEventListener("click", () => loadExample(Number($("example").value)));
  $("example").addEventListener("change", () => loadExample(Number($("example").value)));
  $("random-example").addEventListener("click", () => {
    const i = Math.floor(Math.random() * info.num_examples);
    $("example").value = i;
    loadExample(i);
  });
  $("reset").addEventListener("click", () => setZ(new Array(info.latent_dim).fill(0)));
  if (info.num_examples > 0) await loadExample(0); else requestDecode();
}

main();
