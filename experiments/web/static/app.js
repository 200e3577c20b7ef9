// singleseg page: a freehand lasso over the 100x100 image, results from /api/segment.
"use strict";
const SIDE = 100, SCALE = 4;
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
let image = null, thumb = null, path = [], drawing = false, busy = false, count = 0;

function show(id) {
  for (const s of ["training", "error", "draw"]) $(s).hidden = s !== id;
}

function fmtTime(s) {
  if (s == null) return "?";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function drawCurve(history) {
  const c = $("curve"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (history.length < 2) return;
  const vals = history.flatMap((r) => [r.train_loss, r.val_loss]).map(Math.log);
  const lo = Math.min(...vals), hi = Math.max(...vals), n = history.length;
  const xy = (i, v) => [10 + (i / (n - 1)) * (c.width - 20),
                        c.height - 10 - ((Math.log(v) - lo) / (hi - lo || 1)) * (c.height - 20)];
  for (const [key, color] of [["train_loss", "#36c"], ["val_loss", "#e73"]]) {
    g.strokeStyle = color; g.beginPath();
    history.forEach((r, i) => { const [x, y] = xy(i, r[key]); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  }
  g.fillStyle = "#36c"; g.fillText("train", 14, 14); g.fillStyle = "#e73"; g.fillText("validation", 50, 14);
}

async function poll() {
  let st;
  try { st = await (await fetch("/api/status")).json(); } catch (e) { setTimeout(poll, 2000); return; }
  if (st.state === "ready") { await startDrawing(); return; }
  if (st.state === "error") { show("error"); $("error-text").textContent = st.error; return; }
  show("training");
  const total = st.num_epochs || 1;
  $("bar-fill").style.width = `${(100 * st.epoch) / total}%`;
  const last = st.history[st.history.length - 1];
  $("train-text").textContent = st.state === "loading" ? "loading the fitted net…" :
    `epoch ${st.epoch} / ${total}` + (last ? `, val loss ${last.val_loss.toFixed(1)}` : "") +
    `, at most ${fmtTime(st.eta_s)} left (stops sooner when the loss converges)`;
  drawCurve(st.history);
  setTimeout(poll, 1000);
}

function loadImg(src) {
  return new Promise((ok, bad) => { const i = new Image(); i.onload = () => ok(i); i.onerror = bad; i.src = src; });
}

async function startDrawing() {
  [image, thumb] = await Promise.all([loadImg("/api/image.png"), loadImg("/api/thumbnail.png")]);
  show("draw");
  redraw();
}

function redraw() {
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  if ($("overlay").checked) {
    ctx.globalAlpha = 0.5; ctx.drawImage(thumb, 0, 0, canvas.width, canvas.height); ctx.globalAlpha = 1;
  }
  if (path.length) {
    ctx.strokeStyle = "#f22"; ctx.lineWidth = 2; ctx.beginPath();
    path.forEach(([x, y], i) => (i ? ctx.lineTo(x * SCALE, y * SCALE) : ctx.moveTo(x * SCALE, y * SCALE)));
    if (!drawing) ctx.closePath();
    ctx.stroke();
  }
}

function toFrame(ev) {
  const r = canvas.getBoundingClientRect();
  const clamp = (v) => Math.min(SIDE, Math.max(0, v));
  return [clamp(((ev.clientX - r.left) / r.width) * SIDE), clamp(((ev.clientY - r.top) / r.height) * SIDE)];
}

canvas.addEventListener("pointerdown", (ev) => {
  if (busy) return;
  drawing = true; path = [toFrame(ev)]; canvas.setPointerCapture(ev.pointerId); redraw();
});
canvas.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  const p = toFrame(ev), q = path[path.length - 1];
  if (Math.hypot(p[0] - q[0], p[1] - q[1]) >= 0.5) { path.push(p); redraw(); }
});
canvas.addEventListener("pointerup", () => { if (drawing) { drawing = false; redraw(); submit(); } });
canvas.addEventListener("pointercancel", () => { drawing = false; path = []; redraw(); });

function setBusy(b) { busy = b; $("busy").hidden = !b; $("undo").disabled = b; $("clear").disabled = b; }

async function submit() {
  if (path.length < 3) { $("message").textContent = "Draw a closed loop around the object."; return; }
  setBusy(true); $("message").textContent = "";
  try {
    const resp = await fetch("/api/segment", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ polygon: path.map(([x, y]) => [+x.toFixed(2), +y.toFixed(2)]) }),
    });
    const out = await resp.json();
    if (!resp.ok) { $("message").textContent = out.error || `error ${resp.status}`; return; }
    addResult(out);
  } catch (e) {
    $("message").textContent = `request failed: ${e}`;
  } finally { setBusy(false); }
}

function addResult(out) {
  count += 1;
  const li = document.createElement("li");
  li.className = "result";
  const img = (src, alt) => Object.assign(document.createElement("img"), { src, alt });
  li.append(img(out.row, "outline | input | output"), " ", img(out.mask, "mask"), " ", img(out.cutout, "cut-out"));
  const links = document.createElement("div");
  links.className = "links";
  const files = [[out.cutout, `cutout_${count}.png`], [out.mask, `mask_${count}.png`]];
  if (out.cutout_full) files.push([out.cutout_full, `cutout_${count}_full.png`]);  // snap + GrabCut
  for (const [href, name] of files) {
    links.append(Object.assign(document.createElement("a"), { href, download: name, textContent: `download ${name}` }));
  }
  links.append(`mask covers ${(100 * out.coverage).toFixed(1)}%`);
  li.append(links);
  $("results").prepend(li);
}

$("undo").addEventListener("click", () => { const first = $("results").firstElementChild; if (first) first.remove(); path = []; redraw(); });
$("clear").addEventListener("click", () => { $("results").replaceChildren(); path = []; redraw(); $("message").textContent = ""; });
$("overlay").addEventListener("change", redraw);
poll();
