// The annotation page: loads the items of one annotation set, lets a person paint class ids on each
// image, and saves the label map through the API. All URLs are relative, so the page works at the
// root of its own server and mounted under a prefix.
import { MaskModel, brushRadius, encodeMaskPNG, equalArrays } from "./mask.js";

const $ = (id) => document.getElementById(id);
const AUTOSAVE_MS = 1500;

const S = {
  items: [], index: -1, resolution: 0, channels: 1, classes: [], colors: [],
  activeClass: 1, tool: "brush", brushSize: 5, fillTolerance: 0, intensity: null, maskVisible: true, opacity: 0.55,
  win: { width: 255, level: 128 },
  model: null, src: null, R: 0,
  view: { scale: 1, ox: 0, oy: 0 }, fitted: false,
  dirty: false, edited: false, autosaveTimer: null, saveChain: Promise.resolve(), saveCount: 0,
  polygon: [], pointer: null, drag: null, spaceHeld: false, lastSaved: null,
};

const view = $("view");
const ctx = view.getContext("2d");
const imgCanvas = document.createElement("canvas");
const maskCanvas = document.createElement("canvas");
let maskPixels = null;   // ImageData of maskCanvas, kept to update regions in place
let frameRequested = false;

// ---------------------------------------------------------------------------------------------
// API

async function api(path, options = {}) {
  const res = await fetch(path, options);
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try { msg = (await res.json()).detail || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Colours

function parseColor(hex) {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex || "");
  const v = m ? parseInt(m[1], 16) : 0x888888;
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function displayName(c) { return String(c.name).replace(/_/g, " "); }

function colorOf(cls) { return S.colors[cls] || [255, 0, 255]; }
function cssColor(cls, alpha = 1) { const [r, g, b] = colorOf(cls); return `rgba(${r},${g},${b},${alpha})`; }

// ---------------------------------------------------------------------------------------------
// Rendering: image (window/level applied) and mask overlay at image resolution, scaled with
// nearest-neighbour into the view.

function renderImage() {
  if (!S.src) return;
  const R = S.R, out = new ImageData(R, R), s = S.src.data, d = out.data;
  const lo = S.win.level - S.win.width / 2, k = 255 / S.win.width;
  for (let i = 0; i < s.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      const v = (s[i + c] - lo) * k;
      d[i + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
    d[i + 3] = 255;
  }
  imgCanvas.getContext("2d").putImageData(out, 0, 0);
  requestDraw();
}

function renderMask(box) {
  if (!S.model) return;
  const R = S.R, m = S.model.data, d = maskPixels.data;
  const b = box || { minI: 0, maxI: R - 1, minJ: 0, maxJ: R - 1 };
  for (let j = b.minJ; j <= b.maxJ; j++) {
    for (let i = b.minI; i <= b.maxI; i++) {
      const p = j * R + i, q = 4 * p, cls = m[p];
      if (cls === 0) { d[q + 3] = 0; continue; }
      const c = colorOf(cls);
      d[q] = c[0]; d[q + 1] = c[1]; d[q + 2] = c[2]; d[q + 3] = 255;
    }
  }
  maskCanvas.getContext("2d").putImageData(maskPixels, 0, 0, b.minI, b.minJ, b.maxI - b.minI + 1, b.maxJ - b.minJ + 1);
  requestDraw();
}

function requestDraw() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => { frameRequested = false; draw(); });
}

function resizeCanvas() {
  const dpr = window.devicePixelRatio || 1, r = view.getBoundingClientRect();
  const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
  if (view.width !== w || view.height !== h) { view.width = w; view.height = h; }
  if (!S.fitted && S.R) fitView();
  requestDraw();
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, view.width, view.height);
  if (!S.src) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const { scale, ox, oy } = S.view, size = S.R * scale;
  ctx.imageSmoothingEnabled = false;
  ctx.shadowColor = "rgba(0,0,0,.6)"; ctx.shadowBlur = 18;
  ctx.fillStyle = "#000"; ctx.fillRect(ox, oy, size, size);
  ctx.shadowBlur = 0;
  ctx.drawImage(imgCanvas, ox, oy, size, size);
  if (S.maskVisible && S.opacity > 0) {
    ctx.globalAlpha = S.opacity;
    ctx.drawImage(maskCanvas, ox, oy, size, size);
    ctx.globalAlpha = 1;
  }
  if (scale >= 14) drawGrid(ox, oy, scale);
  drawPolygon();
  drawCursor();
}

function drawGrid(ox, oy, scale) {
  // faint pixel boundaries when zoomed far in, to place strokes precisely
  const r = view.getBoundingClientRect();
  const i0 = Math.max(0, Math.floor(-ox / scale)), i1 = Math.min(S.R, Math.ceil((r.width - ox) / scale));
  const j0 = Math.max(0, Math.floor(-oy / scale)), j1 = Math.min(S.R, Math.ceil((r.height - oy) / scale));
  ctx.beginPath();
  for (let i = i0; i <= i1; i++) { ctx.moveTo(ox + i * scale, oy + j0 * scale); ctx.lineTo(ox + i * scale, oy + j1 * scale); }
  for (let j = j0; j <= j1; j++) { ctx.moveTo(ox + i0 * scale, oy + j * scale); ctx.lineTo(ox + i1 * scale, oy + j * scale); }
  ctx.lineWidth = 1;
  ctx.strokeStyle = "rgba(0,0,0,.22)";
  ctx.stroke();
}

function drawCursor() {
  const p = S.pointer;
  if (!p || S.drag && S.drag.kind !== "paint" || !["brush", "eraser"].includes(S.tool) || S.spaceHeld) return;
  const { scale, ox, oy } = S.view, r = brushRadius(S.brushSize), cls = S.tool === "eraser" ? 0 : S.activeClass;
  if (r * r * 3.2 < 6000 && scale >= 2) {
    // exact footprint: the pixels a click here would paint
    ctx.fillStyle = cls === 0 ? "rgba(255,255,255,.28)" : cssColor(cls, 0.45);
    ctx.beginPath();
    for (const q of S.model.segmentPixels(p.x, p.y, p.x, p.y, r)) {
      const i = q % S.R, j = (q - i) / S.R;
      ctx.rect(ox + i * scale, oy + j * scale, scale, scale);
    }
    ctx.fill();
  }
  const cx = ox + p.x * scale, cy = oy + p.y * scale, rad = Math.max(r * scale, 2);
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = "rgba(0,0,0,.75)";
  ctx.beginPath(); ctx.arc(cx, cy, rad + 1, 0, 2 * Math.PI); ctx.stroke();
  ctx.strokeStyle = cls === 0 ? "#fff" : cssColor(cls);
  ctx.setLineDash(cls === 0 ? [4, 3] : []);
  ctx.beginPath(); ctx.arc(cx, cy, rad, 0, 2 * Math.PI); ctx.stroke();
  ctx.setLineDash([]);
}

function drawPolygon() {
  if (S.tool !== "polygon" || !S.polygon.length) return;
  const { scale, ox, oy } = S.view, pts = S.polygon.map((q) => [ox + q.x * scale, oy + q.y * scale]);
  const col = cssColor(S.activeClass);
  ctx.beginPath();
  pts.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  if (S.pointer) ctx.lineTo(ox + S.pointer.x * scale, oy + S.pointer.y * scale);
  ctx.fillStyle = cssColor(S.activeClass, 0.18); ctx.fill();
  ctx.lineWidth = 2; ctx.strokeStyle = col; ctx.stroke();
  pts.forEach(([x, y], k) => {
    ctx.beginPath(); ctx.arc(x, y, k === 0 ? 6 : 4, 0, 2 * Math.PI);
    ctx.fillStyle = k === 0 ? "#fff" : col; ctx.fill();
    ctx.lineWidth = 1.5; ctx.strokeStyle = "#000"; ctx.stroke();
  });
}

// ---------------------------------------------------------------------------------------------
// View: scale = CSS pixels per image pixel, (ox, oy) = image origin in CSS pixels of the canvas

function clientToImage(cx, cy) {
  const r = view.getBoundingClientRect();
  return { x: (cx - r.left - S.view.ox) / S.view.scale, y: (cy - r.top - S.view.oy) / S.view.scale };
}

function fitView() {
  const r = view.getBoundingClientRect();
  if (!S.R || r.width < 2 || r.height < 2) return;
  let scale = Math.min(r.width, r.height) * 0.94 / S.R;
  if (scale > 1) scale = Math.floor(scale * 4) / 4;   // tidy factor for crisp pixel edges
  S.view = { scale, ox: Math.round((r.width - S.R * scale) / 2), oy: Math.round((r.height - S.R * scale) / 2) };
  S.fitted = true;
  updateZoomLabel();
  requestDraw();
}

function zoomAt(factor, cx, cy) {
  const r = view.getBoundingClientRect();
  const px = cx - r.left, py = cy - r.top;
  const fit = Math.min(r.width, r.height) / S.R;
  const scale = Math.min(Math.max(S.view.scale * factor, fit * 0.25), Math.max(64, fit * 4));
  const f = scale / S.view.scale;
  S.view = { scale, ox: px - (px - S.view.ox) * f, oy: py - (py - S.view.oy) * f };
  updateZoomLabel();
  requestDraw();
}

function updateZoomLabel() { $("zoom-value").textContent = `${Math.round(S.view.scale * 100)}%`; }

// ---------------------------------------------------------------------------------------------
// Editing

function edited(box) {
  renderMask(box);
  S.dirty = true;
  if (!S.edited) { S.edited = true; updateItemHeader(); }
  setStatus("Unsaved changes", "");
  updateHistoryButtons();
  clearTimeout(S.autosaveTimer);
  S.autosaveTimer = setTimeout(() => save(false), AUTOSAVE_MS);
}

function finishEdit() {
  // called when an operation that began with checkpoint() ends
  const before = S.model.undoStack.length;
  S.model.discardCheckpointIfUnchanged();
  if (S.model.undoStack.length < before) { updateHistoryButtons(); return; }
  edited(null);
  updatePaletteShares();
}

function undo() {
  if (S.polygon.length) { S.polygon = []; requestDraw(); return; }
  if (S.model && S.model.undo()) { edited(null); updatePaletteShares(); }
}

function redo() {
  if (S.model && S.model.redo()) { edited(null); updatePaletteShares(); }
}

function closePolygon() {
  if (S.polygon.length >= 3) {
    S.model.checkpoint();
    S.model.fillPolygon(S.polygon, S.activeClass);
    finishEdit();
  }
  S.polygon = [];
  requestDraw();
}

function updateHistoryButtons() {
  $("undo").disabled = !S.model || !S.model.canUndo() && !S.polygon.length;
  $("redo").disabled = !S.model || !S.model.canRedo();
}

// ---------------------------------------------------------------------------------------------
// Pointer input

view.addEventListener("contextmenu", (e) => e.preventDefault());

view.addEventListener("pointerdown", (e) => {
  if (!S.model) return;
  view.focus();
  const p = clientToImage(e.clientX, e.clientY);
  S.pointer = p;
  const pan = e.button === 1 || (e.button === 0 && (S.spaceHeld || S.tool === "pan"));
  if (pan) {
    S.drag = { kind: "pan", x: e.clientX, y: e.clientY, ox: S.view.ox, oy: S.view.oy };
  } else if (e.button === 2) {
    S.drag = { kind: "window", x: e.clientX, y: e.clientY, width: S.win.width, level: S.win.level };
  } else if (e.button === 0 && (S.tool === "brush" || S.tool === "eraser")) {
    const cls = S.tool === "eraser" ? 0 : S.activeClass;
    S.model.checkpoint();
    S.drag = { kind: "paint", cls, last: p };
    const box = S.model.paintSegment(p.x, p.y, p.x, p.y, brushRadius(S.brushSize), cls);
    if (box) renderMask(box);
  } else if (e.button === 0 && S.tool === "fill") {
    S.model.checkpoint();
    const box = S.model.floodFill(p.x, p.y, S.activeClass, S.intensity, S.fillTolerance);
    if (box) renderMask(box);
    finishEdit();
    return;
  } else if (e.button === 0 && S.tool === "polygon") {
    if (e.detail >= 2) { closePolygon(); return; }     // double-click closes
    const first = S.polygon[0];
    if (first && S.polygon.length >= 3 && Math.hypot(first.x - p.x, first.y - p.y) * S.view.scale < 9) {
      closePolygon();
      return;
    }
    S.polygon.push(p);
    updateHistoryButtons();
    requestDraw();
    return;
  } else {
    return;
  }
  view.setPointerCapture(e.pointerId);
  e.preventDefault();
});

view.addEventListener("pointermove", (e) => {
  if (!S.model) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  const samples = events.length ? events : [e];
  const d = S.drag;
  for (const ev of samples) {
    const p = clientToImage(ev.clientX, ev.clientY);
    if (d && d.kind === "paint") {
      const box = S.model.paintSegment(d.last.x, d.last.y, p.x, p.y, brushRadius(S.brushSize), d.cls);
      if (box) renderMask(box);
      d.last = p;
    }
    S.pointer = p;
  }
  if (d && d.kind === "pan") {
    S.view.ox = d.ox + e.clientX - d.x; S.view.oy = d.oy + e.clientY - d.y;
  } else if (d && d.kind === "window") {
    setWindow(d.width + (e.clientX - d.x), d.level - (e.clientY - d.y));
  }
  updateHud();
  requestDraw();
});

function endDrag(e) {
  const d = S.drag;
  S.drag = null;
  if (d && d.kind === "paint") finishEdit();
  if (view.hasPointerCapture && view.hasPointerCapture(e.pointerId)) view.releasePointerCapture(e.pointerId);
  requestDraw();
}
view.addEventListener("pointerup", endDrag);
view.addEventListener("pointercancel", endDrag);
view.addEventListener("pointerleave", () => { if (!S.drag) { S.pointer = null; updateHud(); requestDraw(); } });

view.addEventListener("wheel", (e) => {
  if (!S.model) return;
  e.preventDefault();
  zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX, e.clientY);
}, { passive: false });

view.addEventListener("dblclick", (e) => e.preventDefault());

function updateHud() {
  const p = S.pointer;
  if (!p || !S.model || p.x < 0 || p.y < 0 || p.x >= S.R || p.y >= S.R) { $("hud").textContent = `${S.R}×${S.R}`; return; }
  const i = Math.floor(p.x), j = Math.floor(p.y), q = 4 * (j * S.R + i), s = S.src.data;
  const value = S.channels === 1 ? `${s[q]}` : `${s[q]},${s[q + 1]},${s[q + 2]}`;
  const cls = S.model.data[j * S.R + i], c = S.classes[cls];
  $("hud").textContent = `x ${i}  y ${j}  ·  value ${value}  ·  ${c ? displayName(c) : cls}`;
}

// ---------------------------------------------------------------------------------------------
// Controls

function setTool(tool) {
  if (tool !== "polygon" && S.polygon.length) S.polygon = [];
  S.tool = tool;
  $("brush-options").hidden = !["brush", "eraser"].includes(tool);
  $("fill-options").hidden = tool !== "fill";
  document.querySelectorAll(".tool").forEach((b) => b.setAttribute("aria-checked", String(b.dataset.tool === tool)));
  view.style.cursor = tool === "pan" ? "grab" : "crosshair";
  updateHistoryButtons();
  requestDraw();
}

function setClass(cls) {
  if (cls < 0 || cls >= S.classes.length) return;
  S.activeClass = cls;
  document.querySelectorAll(".swatch-button").forEach((b) => b.setAttribute("aria-checked", String(Number(b.dataset.cls) === cls)));
  if (S.tool === "eraser" || S.tool === "pan") setTool("brush");
  requestDraw();
}

function setBrushSize(v) {
  S.brushSize = Math.min(64, Math.max(1, Math.round(v)));
  $("brush-size").value = S.brushSize;
  $("brush-size-value").textContent = S.brushSize;
  requestDraw();
}

function setFillTolerance(v) {
  S.fillTolerance = Math.min(128, Math.max(0, Math.round(v)));
  $("fill-tolerance").value = S.fillTolerance;
  $("fill-tolerance-value").textContent = S.fillTolerance ? S.fillTolerance : "off";
}

function setOpacity(v) {
  S.opacity = Math.min(1, Math.max(0, v));
  $("mask-opacity").value = Math.round(S.opacity * 100);
  $("mask-opacity-value").textContent = `${Math.round(S.opacity * 100)}%`;
  requestDraw();
}

function setMaskVisible(v) { S.maskVisible = v; $("mask-visible").checked = v; requestDraw(); }

function setWindow(width, level) {
  S.win.width = Math.min(255, Math.max(1, Math.round(width)));
  S.win.level = Math.min(255, Math.max(0, Math.round(level)));
  $("window-width").value = S.win.width; $("window-width-value").textContent = S.win.width;
  $("window-level").value = S.win.level; $("window-level-value").textContent = S.win.level;
  renderImage();
}

function buildPalette() {
  const pal = $("palette");
  pal.innerHTML = "";
  S.classes.forEach((c, id) => {
    if (id === 0) return;   // class 0 is background: painted by the eraser
    const b = document.createElement("button");
    b.className = "swatch-button";
    b.dataset.cls = id;
    b.setAttribute("role", "radio");
    b.title = `${displayName(c)}${id <= 9 ? ` (key ${id})` : ""}`;
    b.innerHTML = `<span class="swatch"></span><span class="name"></span><span><span class="share"></span>${id <= 9 ? `<kbd>${id}</kbd>` : ""}</span>`;
    b.querySelector(".swatch").style.background = c.color;
    b.querySelector(".name").textContent = displayName(c);
    b.addEventListener("click", () => setClass(id));
    pal.appendChild(b);
  });
  if (S.classes.length < 2) pal.textContent = "Only a background class is defined in labels.json.";
}

function updatePaletteShares() {
  if (!S.model) return;
  const counts = S.model.counts(S.classes.length), total = S.R * S.R;
  document.querySelectorAll(".swatch-button").forEach((b) => {
    const n = counts[Number(b.dataset.cls)] || 0;
    b.querySelector(".share").textContent = n ? `${(100 * n / total).toFixed(n / total < 0.01 ? 1 : 0)}%` : "";
  });
}

// ---------------------------------------------------------------------------------------------
// Items: strip, header, loading, saving

function stateLabel(state) {
  return { todo: "to do", draft: "draft", "pre-annotated": "pre-annotated", done: "done" }[state] || state;
}

// a seed image, or a real image projected into the generator (kind "real")
function itemLabel(it) { return it.kind === "real" ? `real ${it.seed}` : `#${it.seed}`; }
function itemTitle(it) { return it.kind === "real" ? `real image ${it.real_name}` : `seed ${it.seed}`; }

// Real items show their original beside the canvas; returns true when the panel appeared or went.
function showOriginal(it) {
  const panel = $("original-panel"), real = it.kind === "real";
  if (real) {
    $("original-image").src = `api/items/${it.id}/original`;
    $("original-quality").textContent =
      `${it.real_name} · reconstruction PSNR ${Number(it.psnr).toFixed(2)} dB · SSIM ${Number(it.ssim).toFixed(3)}`;
  }
  if (panel.hidden === !real) return false;
  panel.hidden = !real;
  return true;
}

function buildStrip() {
  const strip = $("strip");
  strip.innerHTML = "";
  S.items.forEach((it, k) => {
    const t = document.createElement("div");
    t.className = "thumb";
    t.setAttribute("role", "option");
    t.dataset.index = k;
    t.innerHTML = `<img alt="" loading="lazy"><span class="dot"></span><div class="label"></div>`;
    t.querySelector("img").src = `api/items/${it.id}/image`;
    t.querySelector(".label").textContent = itemLabel(it);
    t.addEventListener("click", () => goTo(k));
    strip.appendChild(t);
  });
  updateStrip();
}

function updateStrip() {
  document.querySelectorAll(".thumb").forEach((t) => {
    const k = Number(t.dataset.index), it = S.items[k];
    t.className = `thumb ${it.state}`;
    t.title = `${itemTitle(it)} · ${stateLabel(it.state)}${it.source ? ` · ${it.source}` : ""}`;
    t.setAttribute("aria-selected", String(k === S.index));
  });
  const done = S.items.filter((it) => it.state === "done").length;
  $("done-count").textContent = done;
  $("total-count").textContent = S.items.length;
  $("progress-fill").style.width = S.items.length ? `${(100 * done) / S.items.length}%` : "0";
}

function updateItemHeader() {
  const it = S.items[S.index];
  if (!it) return;
  $("item-name").textContent = it.kind === "real" ? `Real image ${it.real_name}` : `Seed ${it.seed}`;
  $("item-name").title = it.id;
  const shown = S.edited && it.state !== "done" ? "draft" : it.state;
  const badge = $("item-state");
  badge.hidden = false;
  badge.textContent = stateLabel(shown);
  badge.className = `badge ${shown}`;
  const note = $("item-note");
  if (it.state === "pre-annotated" && !S.edited) {
    note.hidden = false;
    note.textContent = `Pre-annotated by ${it.source || "a model"}: check and correct`;
  } else {
    note.hidden = true;
  }
  $("save").disabled = false;
  $("prev").disabled = S.index <= 0;
  $("next").disabled = S.index >= S.items.length - 1;
}

function setStatus(text, cls = "") {
  const s = $("save-status");
  s.textContent = text;
  s.className = `save-status ${cls}`;
}

function showMessage(text, bad = false) {
  const m = $("message");
  m.hidden = !text;
  m.textContent = text || "";
  m.className = `message${bad ? " bad" : ""}`;
}

async function loadItem(k) {
  window.annotator.ready = false;
  try {
    await loadItemData(k);
  } finally {
    window.annotator.ready = Boolean(S.model);
  }
}

async function loadItemData(k) {
  const it = S.items[k];
  const blob = await (await api(`api/items/${it.id}/image`)).blob();
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const R = bitmap.width;
  const tmp = document.createElement("canvas");
  tmp.width = R; tmp.height = R;
  const tctx = tmp.getContext("2d", { willReadFrequently: true });
  tctx.drawImage(bitmap, 0, 0);
  const src = tctx.getImageData(0, 0, R, R);
  let data = null;
  if (it.has_mask) {
    data = new Uint8Array(await (await api(`api/items/${it.id}/mask?format=raw`)).arrayBuffer());
    if (data.length !== R * R) throw new Error(`mask of ${it.id} has ${data.length} pixels, expected ${R * R}`);
  }
  // commit only once everything loaded, so a failed load leaves the previous item intact
  if (R !== S.R) S.fitted = false;
  S.index = k; S.R = R; S.src = src;
  S.intensity = new Float32Array(R * R);   // grey value (channel mean) per pixel, for the fill tolerance
  for (let p = 0; p < R * R; p++) S.intensity[p] = (src.data[4 * p] + src.data[4 * p + 1] + src.data[4 * p + 2]) / 3;
  S.model = new MaskModel(R, data);
  S.dirty = false; S.edited = false; S.polygon = [];
  imgCanvas.width = R; imgCanvas.height = R;
  maskCanvas.width = R; maskCanvas.height = R;
  maskPixels = new ImageData(R, R);
  if (showOriginal(it)) { S.fitted = false; resizeCanvas(); }   // the canvas got narrower or wider
  if (!S.fitted) fitView();
  renderImage();
  renderMask(null);
  updateItemHeader(); updateStrip(); updateHistoryButtons(); updatePaletteShares(); updateHud();
  const when = it.updated ? new Date(it.updated * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "";
  setStatus(it.has_mask ? (when ? `Last saved ${when}` : "") : "Not saved yet");
  history.replaceState(null, "", `#${it.id}`);
  const thumb = document.querySelector(`.thumb[data-index="${k}"]`);
  if (thumb) thumb.scrollIntoView({ block: "nearest", inline: "nearest" });
}

async function goTo(k) {
  if (k < 0 || k >= S.items.length || k === S.index) return;
  clearTimeout(S.autosaveTimer);
  if (S.dirty && !(await save(false)) &&
      !confirm("This image could not be saved. Leave it anyway and lose the changes?")) return;
  try {
    showMessage("");
    await loadItem(k);
  } catch (err) {
    setStatus(`Could not open ${S.items[k].id}: ${err.message}`, "bad");
  }
}

// Save the current mask. markDone: the person says it is finished; otherwise an autosave, which
// keeps a finished item finished and stores anything else as a draft.
function save(markDone) {
  const run = async () => {
    const it = S.items[S.index];
    if (!it || !S.model) return false;
    if (!markDone && !S.dirty) return true;
    clearTimeout(S.autosaveTimer);
    const snapshot = S.model.data.slice(), id = it.id;
    const state = markDone || it.state === "done" ? "done" : "todo";
    setStatus(markDone ? "Saving…" : "Autosaving…");
    try {
      const png = await encodeMaskPNG(snapshot, S.R, S.R);
      const res = await api(`api/items/${id}/mask?state=${state}`, {
        method: "PUT", body: png, headers: { "Content-Type": "image/png" },
      });
      const saved = await res.json();
      const k = S.items.findIndex((x) => x.id === id);
      if (k >= 0) S.items[k] = saved;
      S.saveCount += 1;
      S.lastSaved = saved;
      if (S.items[S.index] && S.items[S.index].id === id && S.model && equalArrays(S.model.data, snapshot)) {
        S.dirty = false;
        const t = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
        setStatus(saved.state === "done" ? `Saved ✓ ${t}` : `Draft saved ${t}`, "ok");
      }
      if (saved.state === "done") S.edited = false;
      updateItemHeader(); updateStrip();
      return true;
    } catch (err) {
      setStatus(`Not saved: ${err.message}`, "bad");
      return false;
    }
  };
  const p = S.saveChain.then(run);
  S.saveChain = p.catch(() => false);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Keyboard

function inTextField(e) {
  const t = e.target;
  return t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && !["range", "checkbox"].includes(t.type)));
}

document.addEventListener("keydown", (e) => {
  if (inTextField(e)) return;
  const mod = e.ctrlKey || e.metaKey, key = e.key;
  if (!$("help").hidden) { if (key === "Escape" || key === "?") $("help").hidden = true; return; }
  if (mod && (key === "z" || key === "Z")) { e.preventDefault(); e.shiftKey ? redo() : undo(); return; }
  if (mod && (key === "y" || key === "Y")) { e.preventDefault(); redo(); return; }
  if (mod && (key === "s" || key === "S")) { e.preventDefault(); save(true); return; }
  if (mod || e.altKey) return;
  if (key === " ") { e.preventDefault(); if (!S.spaceHeld) { S.spaceHeld = true; view.style.cursor = "grab"; requestDraw(); } return; }
  if (/^[1-9]$/.test(key)) { setClass(Number(key)); return; }
  const onSlider = e.target && e.target.type === "range";
  switch (key.length === 1 ? key.toLowerCase() : key) {
    case "b": setTool("brush"); break;
    case "e": setTool("eraser"); break;
    case "f": setTool("fill"); break;
    case "p": setTool("polygon"); break;
    case "h": setTool("pan"); break;
    case "m": setMaskVisible(!S.maskVisible); break;
    case "[": setBrushSize(S.brushSize - (S.brushSize > 10 ? 2 : 1)); break;
    case "]": setBrushSize(S.brushSize + (S.brushSize >= 10 ? 2 : 1)); break;
    case "+": case "=": zoomCentered(1.25); break;
    case "-": zoomCentered(0.8); break;
    case "0": fitView(); break;
    case "?": $("help").hidden = false; break;
    case "Enter": if (S.tool === "polygon") closePolygon(); break;
    case "Escape": S.polygon = []; updateHistoryButtons(); requestDraw(); break;
    case "Backspace": if (S.polygon.length) { S.polygon.pop(); updateHistoryButtons(); requestDraw(); } break;
    case "ArrowLeft": case "PageUp": if (!onSlider) { e.preventDefault(); goTo(S.index - 1); } break;
    case "ArrowRight": case "PageDown": if (!onSlider) { e.preventDefault(); goTo(S.index + 1); } break;
    default: return;
  }
});

document.addEventListener("keyup", (e) => {
  if (e.key === " " && !inTextField(e)) {
    e.preventDefault();
    S.spaceHeld = false;
    view.style.cursor = S.tool === "pan" ? "grab" : "crosshair";
    requestDraw();
  }
});

function zoomCentered(f) {
  const r = view.getBoundingClientRect();
  zoomAt(f, r.left + r.width / 2, r.top + r.height / 2);
}

// ---------------------------------------------------------------------------------------------
// Wiring and start

function wire() {
  document.querySelectorAll(".tool").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  $("brush-size").addEventListener("input", (e) => setBrushSize(Number(e.target.value)));
  $("fill-tolerance").addEventListener("input", (e) => setFillTolerance(Number(e.target.value)));
  $("mask-opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value) / 100));
  $("mask-visible").addEventListener("change", (e) => setMaskVisible(e.target.checked));
  $("window-width").addEventListener("input", (e) => setWindow(Number(e.target.value), S.win.level));
  $("window-level").addEventListener("input", (e) => setWindow(S.win.width, Number(e.target.value)));
  $("contrast-reset").addEventListener("click", () => setWindow(255, 128));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("save").addEventListener("click", () => save(true));
  $("prev").addEventListener("click", () => goTo(S.index - 1));
  $("next").addEventListener("click", () => goTo(S.index + 1));
  $("zoom-in").addEventListener("click", () => zoomCentered(1.25));
  $("zoom-out").addEventListener("click", () => zoomCentered(0.8));
  $("zoom-fit").addEventListener("click", fitView);
  $("help-button").addEventListener("click", () => { $("help").hidden = false; });
  $("help-close").addEventListener("click", () => { $("help").hidden = true; });
  // buttons must not keep focus, or Space (pan) would press them
  document.querySelectorAll("button").forEach((b) => b.addEventListener("mouseup", () => b.blur()));
  new ResizeObserver(resizeCanvas).observe($("canvas-wrap"));
  window.addEventListener("beforeunload", (e) => { if (S.dirty) { save(false); e.preventDefault(); e.returnValue = ""; } });
  document.addEventListener("visibilitychange", () => { if (document.hidden && S.dirty) save(false); });
}

// A small read-only handle for people debugging in the console and for the browser tests.
window.annotator = {
  ready: false,
  get currentId() { return S.items[S.index] ? S.items[S.index].id : null; },
  get dirty() { return S.dirty; },
  get saveCount() { return S.saveCount; },
  get view() { return { ...S.view, resolution: S.R }; },
  get tool() { return S.tool; },
  get activeClass() { return S.activeClass; },
  mask() { return S.model ? Array.from(S.model.data) : null; },
  items() { return S.items.map((it) => ({ ...it })); },
};

async function start() {
  wire();
  setTool("brush"); setBrushSize(5); setOpacity(0.55);
  try {
    const [labels, listing] = await Promise.all([(await api("api/labels")).json(), (await api("api/items")).json()]);
    S.classes = labels.classes;
    S.colors = S.classes.map((c) => parseColor(c.color));
    S.items = listing.items;
    S.channels = listing.channels || 1;
    $("run-name").textContent = listing.run ? `run: ${listing.run}` : "DatasetGAN";
    document.title = `Annotate ${listing.run || ""} · DatasetGAN`;
    buildPalette();
    setClass(S.classes.length > 1 ? 1 : 0);
    buildStrip();
    if (!S.items.length) {
      showMessage("This annotation set has no images yet. Render some with: datasetgan annotate RUN --n 30");
      return;
    }
    const wanted = S.items.findIndex((it) => `#${it.id}` === location.hash);
    const firstOpen = S.items.findIndex((it) => it.state !== "done");
    await loadItem(wanted >= 0 ? wanted : firstOpen >= 0 ? firstOpen : 0);
  } catch (err) {
    showMessage(`Could not load the annotation set: ${err.message}`, true);
  }
}

start();
