// The attention explorer: one POST /v1/attention per sentence, then every kind, layer and head is
// drawn from that answer without asking again. Tokens are set as text (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { model: null, doc: null };

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function option(value, label) {
  const o = document.createElement("option");
  o.value = String(value);
  o.textContent = label;
  return o;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function init() {
  const answer = await fetch("/v1/model");
  if (!answer.ok) { setStatus("the model is not loaded yet: reload in a moment", true); return; }
  state.model = await answer.json();
  $("model-name").textContent = state.model.model;
  for (let b = 1; b <= state.model.max_beam; b++) $("beam").appendChild(option(b, b === 1 ? "1 (greedy)" : b));
  $("beam").value = String(Math.min(state.model.defaults.beam_size, state.model.max_beam));  // the run's search.json, else 5
  $("translate").addEventListener("click", run);
  $("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); run(); } });
  $("kind").addEventListener("change", () => { fillLayers(); render(); });
  for (const id of ["layer", "head", "values"]) $(id).addEventListener("change", render);
  document.body.dataset.ready = "true";
}

async function run() {
  const text = $("text").value.trim();
  if (!text) { setStatus("type a sentence first", true); return; }
  $("translate").disabled = true;
  setStatus("translating…");
  try {
    const answer = await fetch("/v1/attention", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, beam_size: Number($("beam").value) }),
    });
    const body = await answer.json();
    if (!answer.ok) { setStatus(body.error || `error ${answer.status}`, true); return; }
    state.doc = body;
    $("translation").textContent = body.translation;
    setStatus(body.truncated ? "the sentence was longer than the model's positions and was cut" : "");
    fillLayers();
    fillHeads();
    $("controls").hidden = false;
    $("views").hidden = false;
    render();
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  } catch (e) {
    setStatus(`the server did not answer (${e})`, true);
  } finally {
    $("translate").disabled = false;
  }
}

function layersOf(kind) {
  return [...new Set(state.doc.maps.filter((m) => m.kind === kind).map((m) => m.layer))].sort((a, b) => a - b);
}

function fillLayers() {
  if (!state.doc) return;
  const keep = $("layer").value, layers = layersOf($("kind").value);
  $("layer").replaceChildren(...layers.map((l) => option(l, l)));
  $("layer").value = layers.includes(Number(keep)) ? keep : String(layers[layers.length - 1]);
}

function fillHeads() {
  const heads = [...new Set(state.doc.maps.map((m) => m.head))].filter((h) => h !== "mean").sort((a, b) => a - b);
  const keep = $("head").value;
  $("head").replaceChildren(option("mean", "mean of heads"), ...heads.map((h) => option(h, h)));
  $("head").value = keep && [...$("head").options].some((o) => o.value === keep) ? keep : "mean";
}

function currentMap() {
  const kind = $("kind").value, layer = Number($("layer").value), head = $("head").value;
  return state.doc.maps.find((m) => m.kind === kind && m.layer === layer && String(m.head) === head);
}

function render() {
  if (!state.doc) return;
  const map = currentMap();
  if (!map) return;
  const useScores = $("values").value === "scores";
  drawHeatmap(map, useScores);
  drawLines(map);
}

function colour(t) { // 0..1 -> white .. deep blue
  const mix = (a, b) => Math.round(a + (b - a) * t);
  return `rgb(${mix(255, 22)}, ${mix(255, 64)}, ${mix(255, 160)})`;
}

function drawHeatmap(map, useScores) {
  const values = useScores ? map.scores : map.weights;
  const finite = values.flat().filter((v) => v !== null);
  const lo = useScores ? Math.min(...finite) : 0, hi = useScores ? Math.max(...finite) : 1;
  const table = $("heatmap");
  const head = document.createElement("thead"), top = document.createElement("tr");
  top.appendChild(document.createElement("th"));
  for (const c of map.columns) { const th = document.createElement("th"); th.textContent = c; top.appendChild(th); }
  head.appendChild(top);
  const body = document.createElement("tbody");
  values.forEach((row, r) => {
    const tr = document.createElement("tr"), th = document.createElement("th");
    th.textContent = map.rows[r];
    tr.appendChild(th);
    row.forEach((v, c) => tr.appendChild(cell(v, r, c, useScores, lo, hi, map)));
    body.appendChild(tr);
  });
  table.replaceChildren(head, body);
  const headName = map.head === "mean" ? "mean of heads" : `head ${map.head}`;
  $("heatmap-title").textContent = `${$("kind").selectedOptions[0].textContent} · layer ${map.layer} · ${headName} · ${useScores ? "scores" : "weights"}`;
  $("legend").textContent = useScores
    ? "Scores QKᵀ/√d_k before the softmax; −∞ marks a masked cell (padding, or a future position in the decoder), which the softmax turns into a weight of exactly 0."
    : "Each row is one query position; its weights over the columns sum to 1. Grey cells are masked (weight exactly 0).";
}

function cell(v, r, c, useScores, lo, hi, map) {
  const td = document.createElement("td");
  td.className = "cell";
  td.dataset.row = r;
  td.dataset.col = c;
  td.dataset.value = v === null ? "masked" : String(v);
  if (v === null) {
    td.classList.add("masked");
    td.textContent = useScores ? "−∞" : "0";
  } else {
    const t = hi > lo ? (v - lo) / (hi - lo) : 0;
    td.style.background = colour(t);
    td.style.color = t > 0.55 ? "#fff" : "#1d2330";
    td.textContent = useScores ? v.toFixed(1) : v.toFixed(2).replace(/^0/, "");
  }
  td.title = `${map.rows[r]} → ${map.columns[c]}: ${v === null ? (useScores ? "−∞ (masked)" : "0 (masked)") : v.toFixed(4)}`;
  return td;
}

function drawLines(map) {
  const step = 22, width = 460, left = 150, right = 310;
  const n = Math.max(map.rows.length, map.columns.length);
  const root = svg("svg", { width, height: n * step + 10, id: "lines-svg" });
  const y = (i) => 12 + i * step;
  const lines = [];
  map.weights.forEach((row, r) => row.forEach((w, c) => {
    if (w === null || w < 0.01) return;
    const line = svg("line", { x1: left + 6, y1: y(r), x2: right - 6, y2: y(c), class: "attn-line",
                               "stroke-width": 2, "stroke-opacity": w, "data-row": r, "data-col": c });
    lines.push(line);
    root.appendChild(line);
  }));
  const glows = map.columns.map((_, c) => {
    const rect = svg("rect", { x: right - 2, y: y(c) - 9, width: 140, height: 18, class: "glow", opacity: 0 });
    root.appendChild(rect);
    return rect;
  });
  const label = (text, x, i, anchor, cls) => {
    const t = svg("text", { x, y: y(i), "text-anchor": anchor, class: cls, "data-index": i });
    t.textContent = text.length > 18 ? text.slice(0, 17) + "…" : text;
    root.appendChild(t);
    return t;
  };
  const queries = map.rows.map((tok, r) => label(tok, left, r, "end", "query-token"));
  const keys = map.columns.map((tok, c) => label(tok, right, c, "start", "key-token"));
  const reset = () => {
    lines.forEach((l) => l.setAttribute("stroke-opacity", map.weights[l.dataset.row][l.dataset.col]));
    glows.forEach((g) => g.setAttribute("opacity", 0));
    [...queries, ...keys].forEach((t) => t.classList.remove("active"));
  };
  queries.forEach((t, r) => {
    t.addEventListener("mouseenter", () => {
      lines.forEach((l) => l.setAttribute("stroke-opacity", Number(l.dataset.row) === r ? map.weights[r][l.dataset.col] : 0));
      glows.forEach((g, c) => g.setAttribute("opacity", 0.35 * (map.weights[r][c] || 0)));
      t.classList.add("active");
    });
    t.addEventListener("mouseleave", reset);
  });
  keys.forEach((t, c) => {
    t.addEventListener("mouseenter", () => {
      lines.forEach((l) => l.setAttribute("stroke-opacity", Number(l.dataset.col) === c ? map.weights[l.dataset.row][c] : 0));
      t.classList.add("active");
    });
    t.addEventListener("mouseleave", reset);
  });
  $("lines").replaceChildren(root);
}

init();
