// singleseg page: draw an outline on the whole photo, correct the answer with add/remove
// strokes; what the canvas shows is the mask the "Download PNG" cuts out.
"use strict";
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
const STROKE_WIDTH = 3;            // frame pixels, as cutouts.STROKE_WIDTH on the server
const TINT = [40, 140, 255], EDGE = [255, 230, 0];
const MAX_UNDO = 100;

let info = null, photo = null, thumb = null;
let doc = { outline: null, strokes: [] }, past = [], future = [];
let live = null;                   // the outline or stroke being drawn, in frame units
let shown = null;                  // {overlay canvas, answer} of the doc last answered
let busy = false, sentKey = null;

function show(id) {
  for (const s of ["training", "error", "draw"]) $(s).hidden = s !== id;
}

function fmtTime(s) {
  if (s == null) return "?";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function offline(text) { $("offline").hidden = !text; $("offline").textContent = text || ""; }

// ---------- training view ----------

function drawCurve(history) {
  const c = $("curve"), g = c.getContext("2d");
  const W = c.width, H = c.height, L = 58, R = 10, T = 22, B = 30;
  g.clearRect(0, 0, W, H);
  g.font = "12px system-ui, sans-serif"; g.fillStyle = "#333"; g.strokeStyle = "#999";
  g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  g.fillText("loss (log scale)", L, 12);
  g.textAlign = "center"; g.fillText("epoch", (L + W - R) / 2, H - 4);
  if (!history.length) return;
  const vals = history.flatMap((r) => [r.train_loss, r.val_loss]).filter((v) => v > 0);
  let lo = Math.log(Math.min(...vals)), hi = Math.log(Math.max(...vals));
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const n = history.length, x0 = history[0].epoch, x1 = history[n - 1].epoch;
  const X = (e) => L + (x1 > x0 ? (e - x0) / (x1 - x0) : 0.5) * (W - L - R);
  const Y = (v) => H - B - ((Math.log(v) - lo) / (hi - lo)) * (H - T - B);
  g.textAlign = "right";
  for (const f of [0, 0.5, 1]) {
    const v = Math.exp(lo + f * (hi - lo)), y = Y(v);
    g.fillText(v.toPrecision(3), L - 4, y + 4);
    g.beginPath(); g.moveTo(L - 3, y); g.lineTo(L, y); g.stroke();
  }
  g.textAlign = "center";
  for (const e of new Set([x0, Math.round((x0 + x1) / 2), x1])) g.fillText(String(e), X(e), H - B + 14);
  for (const [key, color, label, lx] of [["train_loss", "#36c", "train", W - 130], ["val_loss", "#e73", "validation", W - 80]]) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    history.forEach((r, i) => (i ? g.lineTo(X(r.epoch), Y(r[key])) : g.moveTo(X(r.epoch), Y(r[key]))));
    if (n === 1) g.arc(X(x0), Y(history[0][key]), 2, 0, 7);
    g.stroke(); g.lineWidth = 1;
    g.fillStyle = color; g.textAlign = "left"; g.fillText(label, lx, 12);
  }
  g.fillStyle = "#333";
}

function trainingText(st) {
  if (st.state === "loading") return "Loading the fitted net…";
  if (!st.epoch) return "Preparing: making the training pairs from the photo and compiling the net; epoch 1 starts soon.";
  const last = st.history[st.history.length - 1];
  const per = st.seconds_per_epoch != null ? ` (${st.seconds_per_epoch.toPrecision(2)} s an epoch)` : "";
  return `Epoch ${st.epoch} of at most ${st.num_epochs}, validation loss ${last.val_loss.toPrecision(3)}. ` +
    `At most ${fmtTime(st.eta_s)} left${per}; it stops sooner when the loss stops improving.`;
}

async function getJSON(url, options) {
  let resp;
  try { resp = await fetch(url, options); } catch (e) {
    throw new Error("The server is not answering. Is the serve command still running?");
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { /* a proxy's HTML error page, say */ }
  if (!resp.ok) throw new Error((body && body.error) || `The server answered ${resp.status}.`);
  if (body === null) throw new Error("The server's answer was not readable.");
  return body;
}

async function poll() {
  let st;
  try { st = await getJSON("/api/status"); offline(null); } catch (e) {
    offline(`${e.message} Trying again every 2 s…`); setTimeout(poll, 2000); return;
  }
  $("upload-box").hidden = !st.uploads || st.state === "training" || st.state === "loading";
  if (st.state === "ready") { info = st; await startDrawing(); return; }
  if (st.state === "error") { show("error"); $("error-text").textContent = st.error; return; }
  show("training");
  $("bar-fill").style.width = `${(100 * st.epoch) / (st.num_epochs || 1)}%`;
  $("train-text").textContent = trainingText(st);
  drawCurve(st.history);
  setTimeout(poll, 1000);
}

// ---------- drawing view ----------

function loadImg(src) {
  return new Promise((ok, bad) => { const i = new Image(); i.onload = () => ok(i); i.onerror = bad; i.src = src; });
}

// The run's sides: the net's frame (config.size) and its thumbnail, as the server sends them.
const thumbSide = () => `${thumb.naturalWidth}x${thumb.naturalHeight}`;

function leadText() {
  if (info.variant === "paper")
    return `Draw a rough outline around the object. This net sees your outline only as a ${thumbSide()} thumbnail, so it need not be neat; then add or remove what it got wrong.`;
  return "Draw a rough outline around the object. The net snaps it to the photo's regions" +
    (info.hybrid ? " and GrabCut refines the edge at full resolution" : "") +
    ", so it need not be neat; then add or remove what it got wrong.";
}

const storeKey = () => `singleseg:${info.run}`;

function save() {
  try { localStorage.setItem(storeKey(), JSON.stringify({ doc, past: past.slice(-MAX_UNDO), future })); } catch (e) { /* private mode */ }
}

function restore() {
  try {
    const s = JSON.parse(localStorage.getItem(storeKey()) || "null");
    if (s && s.doc && Array.isArray(s.past) && Array.isArray(s.future)) ({ doc, past, future } = s);
  } catch (e) { /* a stale or foreign entry: start afresh */ }
}

async function startDrawing() {
  try {
    [photo, thumb] = await Promise.all([loadImg("/api/photo.png"), loadImg("/api/thumbnail.png")]);
  } catch (e) {
    offline("The photo did not load. Reload the page to try again."); return;
  }
  $("lead").textContent = leadText();
  document.querySelectorAll(".thumb-side").forEach((e) => { e.textContent = thumbSide(); });
  $("side").textContent = `${info.side}x${info.side}`;
  show("draw");
  restore();
  layout();
  update();
}

// The canvas has as many pixels as it is shown with, so lines stay sharp on any screen.
function layout() {
  const aspect = photo.naturalWidth / photo.naturalHeight;
  const maxW = Math.min(960, Math.max(200, (window.innerHeight - 40) * 0.8 * aspect));
  $("stage").style.maxWidth = `${Math.floor(maxW)}px`;
  const w = $("stage").clientWidth, dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round((w / aspect) * dpr);
  if (shown) shown.overlay = null;  // rebuilt at the new size
  redraw();
}

// Photo pixels per canvas pixel, and the crop in canvas pixels.
function geometry() {
  const s = canvas.width / info.photo.width, c = info.photo.crop;
  return { s, left: c.left * s, top: c.top * s, size: c.side * s, unit: (c.side * s) / info.side };
}

function toFrame(ev) {
  const r = canvas.getBoundingClientRect(), g = geometry();
  const cx = ((ev.clientX - r.left) / r.width) * canvas.width, cy = ((ev.clientY - r.top) / r.height) * canvas.height;
  const clamp = (v) => Math.min(info.side, Math.max(0, v));
  return [clamp((cx - g.left) / g.unit), clamp((cy - g.top) / g.unit)];
}

// The answer's mask as a tinted layer with its edge, at the canvas' size.
function buildOverlay(maskImg) {
  const g = geometry(), w = canvas.width, h = canvas.height;
  const off = document.createElement("canvas"); off.width = w; off.height = h;
  const o = off.getContext("2d");
  o.imageSmoothingEnabled = false;
  o.drawImage(maskImg, 0, 0, w, h);
  const d = o.getImageData(0, 0, w, h), px = d.data, on = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) on[i] = px[4 * i] > 127;
  const edgeW = Math.max(1, Math.round(g.s > 1 ? 1 : window.devicePixelRatio || 1));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = y * w + x;
    let edge = false;
    if (on[i]) for (let k = 1; k <= edgeW && !edge; k++)
      edge = x < k || y < k || x >= w - k || y >= h - k || !on[i - k] || !on[i + k] || !on[i - k * w] || !on[i + k * w];
    const c = edge ? EDGE : TINT;
    px[4 * i] = c[0]; px[4 * i + 1] = c[1]; px[4 * i + 2] = c[2];
    px[4 * i + 3] = on[i] ? (edge ? 255 : 100) : 0;
  }
  o.putImageData(d, 0, 0);
  return off;
}

function path(points, close) {
  const g = geometry();
  ctx.beginPath();
  points.forEach(([x, y], i) => {
    const X = g.left + x * g.unit, Y = g.top + y * g.unit;
    i ? ctx.lineTo(X, Y) : ctx.moveTo(X, Y);
  });
  if (close) ctx.closePath();
}

function drawStroke(s) {
  const g = geometry();
  ctx.strokeStyle = s.mode === "add" ? "rgba(40,200,90,.85)" : "rgba(230,40,120,.85)";
  ctx.lineWidth = STROKE_WIDTH * g.unit; ctx.lineCap = ctx.lineJoin = "round";
  path(s.points.length > 1 ? s.points : [s.points[0], s.points[0]], false);
  ctx.stroke();
}

function redraw() {
  if (!photo) return;
  const g = geometry(), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(photo, 0, 0, W, H);
  if ($("overlay").checked) {
    ctx.imageSmoothingEnabled = false; ctx.globalAlpha = 0.6;
    ctx.drawImage(thumb, g.left, g.top, g.size, g.size); ctx.globalAlpha = 1;
  }
  // Outside the crop the net cannot answer: dim it, and mark the crop.
  ctx.fillStyle = "rgba(0,0,0,.6)";
  ctx.fillRect(0, 0, W, g.top); ctx.fillRect(0, g.top + g.size, W, H - g.top - g.size);
  ctx.fillRect(0, g.top, g.left, g.size); ctx.fillRect(g.left + g.size, g.top, W - g.left - g.size, g.size);
  ctx.setLineDash([6, 4]); ctx.strokeStyle = "#fff"; ctx.lineWidth = 1;
  ctx.strokeRect(g.left + 0.5, g.top + 0.5, g.size - 1, g.size - 1); ctx.setLineDash([]);
  if (shown && shown.maskImg) {
    if (!shown.overlay) shown.overlay = buildOverlay(shown.maskImg);
    ctx.drawImage(shown.overlay, 0, 0);
  }
  const outline = live && live.mode === "outline" ? live.points : doc.outline;
  if (outline) {
    ctx.strokeStyle = "#f22"; ctx.lineWidth = 2 * (window.devicePixelRatio || 1);
    path(outline, !(live && live.mode === "outline")); ctx.stroke();
  }
  for (const s of doc.strokes) drawStroke(s);
  if (live && live.mode !== "outline") drawStroke(live);
}

function mode() {
  const m = document.querySelector('input[name="mode"]:checked').value;
  return doc.outline ? m : "outline";  // strokes correct an answer: the first line is an outline
}

canvas.addEventListener("pointerdown", (ev) => {
  if (!info) return;
  live = { mode: mode(), points: [toFrame(ev)] };
  canvas.setPointerCapture(ev.pointerId); redraw();
});
canvas.addEventListener("pointermove", (ev) => {
  if (!live) return;
  const p = toFrame(ev), q = live.points[live.points.length - 1];
  if (Math.hypot(p[0] - q[0], p[1] - q[1]) >= 0.3) { live.points.push(p); redraw(); }
});
canvas.addEventListener("pointerup", () => { if (live) finish(); });
canvas.addEventListener("pointercancel", () => { live = null; redraw(); });

const round2 = (pts) => pts.map(([x, y]) => [+x.toFixed(2), +y.toFixed(2)]);

function finish() {
  const { mode: m, points } = live;
  live = null;
  if (m === "outline") {
    if (points.length < 3) { message("Draw a closed loop around the object (press, drag round it, let go)."); redraw(); return; }
    commit({ outline: round2(points), strokes: [] });
  } else {
    commit({ outline: doc.outline, strokes: [...doc.strokes, { mode: m, points: round2(points) }] });
  }
}

function commit(next) {
  past.push(doc); if (past.length > MAX_UNDO) past.shift();
  doc = next; future = [];
  update();
}

function undo() { if (past.length) { future.push(doc); doc = past.pop(); update(); } }
function redo() { if (future.length) { past.push(doc); doc = future.pop(); update(); } }

function message(text, isError) { $("message").textContent = text || ""; $("message").classList.toggle("err", !!isError); }

function update() {
  save();
  $("undo").disabled = !past.length; $("redo").disabled = !future.length;
  for (const input of document.querySelectorAll('input[name="mode"]')) input.disabled = !doc.outline && input.value !== "outline";
  if (!doc.outline) { shown = null; $("downloads").hidden = true; }
  redraw();
  request();
}

// One request at a time; whatever is drawn meanwhile is sent as soon as it returns, so
// no stroke is dropped and the last answer shown is always that of the latest drawing.
async function request() {
  if (busy || !doc.outline) return;
  const key = JSON.stringify(doc);
  if (shown && shown.key === key) return;
  busy = true; sentKey = key; $("busy").hidden = false; message("");
  try {
    const answer = await getJSON("/api/segment", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ polygon: doc.outline, strokes: doc.strokes }),
    });
    const maskImg = await loadImg(answer.mask_full);
    shown = { key, answer, maskImg, overlay: null };
    showAnswer(answer);
  } catch (e) {
    shown = null; $("downloads").hidden = true;
    message(e.message, true);
    // A refused outline is redrawn, not corrected: back to the outline tool.
    if (!doc.strokes.length) document.querySelector('input[name="mode"][value="outline"]').checked = true;
  } finally {
    busy = false; $("busy").hidden = true;
  }
  redraw();
  if (JSON.stringify(doc) !== sentKey) request();
}

// "Soft edges" asks the server for fractional alpha at the edge (a guided filter of the
// mask by the photo); the tinted mask on the canvas is the hard one either way.
function cutoutHref() {
  return cutoutUrl + ($("soft-edges").checked ? "?soft=1" : "");
}

let cutoutUrl = "";
function showAnswer(a) {
  cutoutUrl = a.cutout_url;
  $("download-png").href = cutoutHref();
  $("download-mask").href = a.mask_full;
  const c = info.photo.crop, k = c.side / info.side;
  const json = {
    frame: `${info.side}x${info.side} square of the photo at left ${c.left}, top ${c.top}, side ${c.side}`,
    polygon: doc.outline, strokes: doc.strokes,
    polygon_photo: doc.outline.map(([x, y]) => [+(c.left + x * k).toFixed(1), +(c.top + y * k).toFixed(1)]),
  };
  const old = $("download-json").href;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  $("download-json").href = URL.createObjectURL(new Blob([JSON.stringify(json)], { type: "application/json" }));
  $("summary").textContent = `${info.photo.width}x${info.photo.height} px, ${(100 * a.coverage).toFixed(1)}% of the square; ${a.method}`;
  $("row").src = a.row;
  $("downloads").hidden = false;
  $("downloads").dataset.answers = String(+($("downloads").dataset.answers || 0) + 1);
}

// A new photo: the server checks it and fits a net on it; the page starts over from the
// progress view, with that run's own saved drawing.
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file) return;
  $("upload-text").textContent = `sending ${file.name}…`;
  try {
    await getJSON("/api/upload", { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
  } catch (e) { $("upload-text").textContent = e.message; return; } finally { $("upload").value = ""; }
  $("upload-text").textContent = "";
  info = photo = thumb = shown = null; live = null;
  doc = { outline: null, strokes: [] }; past = []; future = [];
  message(""); $("downloads").hidden = true; $("upload-box").hidden = true;
  show("training"); $("train-text").textContent = trainingText({ state: "training", epoch: 0 });
  poll();
});

$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("clear").addEventListener("click", () => { if (doc.outline) commit({ outline: null, strokes: [] }); message(""); });
$("overlay").addEventListener("change", redraw);
document.addEventListener("keydown", (ev) => {
  if (!(ev.ctrlKey || ev.metaKey) || $("draw").hidden) return;
  const k = ev.key.toLowerCase();
  if (k === "z" && !ev.shiftKey) { ev.preventDefault(); undo(); }
  else if ((k === "z" && ev.shiftKey) || k === "y") { ev.preventDefault(); redo(); }
});
window.addEventListener("resize", () => { if (photo && !$("draw").hidden) layout(); });
poll();
$("soft-edges").addEventListener("change", () => { if (cutoutUrl) $("download-png").href = cutoutHref(); });
