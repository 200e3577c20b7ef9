"""The drawing page's HTTP API (standard library only), separate from its entry point.

Routes (everything else is 404; nothing is ever read from a path the client names):
  GET  /                 the page; /static/app.js and /static/style.css its code
  GET  /api/status       {"state": "training"|"ready"|"error", epochs, history, eta_s,
                         and once ready "photo" (its size and crop), "variant", "hybrid"}
  GET  /api/image.png    the run's side x side image (config.size: the seed's 100x100);
                         GET /api/thumbnail.png  its thumbnail (10x10)
  GET  /api/photo.png    the whole photo, scaled to fit PHOTO_SIDE (what the page draws on)
  POST /api/segment      {"polygon": [[x, y], ...], "strokes": [{"mode": "add"|"remove",
                         "points": [[x, y], ...]}, ...]} in the side x side frame of the crop
                         (strokes optional) -> {"row", "mask", "cutout"} (the net's
                         side x side answer) and "mask_full" (the corrected answer at the
                         original photo's resolution, zero outside the crop) as PNG
                         data URLs, "cutout_url" (below), and "method" (which answer)
  GET  /api/cutout/KEY.png  the RGBA cut-out of one of the last KEPT_ANSWERS answers
                         (the photo's pixels, alpha = that answer's mask_full); 404 once
                         it has been forgotten. Sent on demand: at a photo's full size it
                         is megabytes, and the page asks for it only on download
  POST /api/upload      a photo's bytes (Content-Type image/png, image/jpeg, ...) -> 202
                         {"state": "training"}: the server fits a net on it (the
                         serve command's --config) in upload_dir/<its digest>/, and the
                         page follows /api/status as for --image. Checked before any
                         fit: the type (415), the size (413, MAX_UPLOAD), and by
                         `load_image` that it decodes whole and is not too many pixels
                         (400); refused while a fit runs (409) or when uploads are off
Bad requests get 4xx with {"error": "..."}: bodies over MAX_BODY bytes (413), bad JSON,
polygons or strokes (400), an answer that cuts out nothing (422), segmentation before
the net is ready (409).
"""
from __future__ import annotations

import base64
import collections
import errno
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import threading
import time
import traceback
from typing import Optional

import jax
import numpy as np
from absl import logging
from PIL import Image

from singleseg_jax import cutouts, run, variants
from singleseg_jax.errors import InputError
from singleseg_jax.image import load_image
from singleseg_jax.segment import Segmentation, segment

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/static/style.css": ("style.css", "text/css; charset=utf-8")}
MAX_BODY = 256 * 1024
MAX_POINTS = 5000
MAX_STROKES = 200
MAX_UPLOAD = 32 * 1024 * 1024
UPLOAD_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
                "image/gif": ".gif", "image/bmp": ".bmp", "image/tiff": ".tif"}
KEPT_ANSWERS = 16  # the cut-outs a download may still ask for (undo reaches back this far)
CUTOUT_PATH = re.compile(r"/api/cutout/([0-9a-f]{20})\.png")
PHOTO_SIDE = 1024  # the longest side of the photo the page draws on (the canvas' pixels)
READ_TIMEOUT = 30  # seconds a connection may sit idle mid-request
ALLOWED = {"/api/segment": "POST", "/api/upload": "POST"}
GET_PATHS = {*STATIC_FILES, "/api/status", "/api/image.png", "/api/thumbnail.png",
             "/api/photo.png"}


def png_bytes(array: np.ndarray) -> bytes:
  """The PNG encoding of a uint8 array."""
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def data_url(array: np.ndarray) -> str:
  """The array as a PNG data URL."""
  return "data:image/png;base64," + base64.b64encode(png_bytes(array)).decode()


def _points(points, what: str, least: int) -> np.ndarray:
  """(K, 2) float points from JSON, least <= K <= MAX_POINTS; InputError otherwise."""
  if not isinstance(points, list) or not least <= len(points) <= MAX_POINTS:
    raise InputError(f"{what} must be a list of {least} to {MAX_POINTS} [x, y] points")
  try:
    arr = np.asarray(points, np.float64)
  except (TypeError, ValueError, OverflowError):
    raise InputError(f"{what} points must be [x, y] numbers") from None
  if arr.ndim != 2 or arr.shape[1] != 2:
    raise InputError(f"{what} points must be [x, y] numbers")
  return arr


def _body(body: bytes) -> dict:
  try:
    data = json.loads(body)
  except (ValueError, UnicodeDecodeError, RecursionError):
    raise InputError("body is not JSON (or nested too deep)") from None
  if not isinstance(data, dict):
    raise InputError("body must be a JSON object with a 'polygon'")
  return data


def _outline(data: dict, side: int) -> np.ndarray:
  """The request's polygon as a side x side bool mask, by the outline rule every front
  end shares (`cutouts.outline_mask`), with a plain reason for one that encloses nothing."""
  try:
    return cutouts.outline_mask(_points(data.get("polygon"), "'polygon'", 3), side, "polygon")
  except cutouts.EnclosesNothing:
    raise InputError("the outline encloses nothing: draw a closed loop around the "
                     "object") from None


def parse_request(body: bytes, side: int) -> tuple[np.ndarray, list]:
  """(outline mask, [(mode, (K, 2) points)] strokes) of a request; InputError if unusable."""
  data = _body(body)
  outline = _outline(data, side)
  raw = data.get("strokes", [])
  if not isinstance(raw, list) or len(raw) > MAX_STROKES:
    raise InputError(f"'strokes' must be a list of at most {MAX_STROKES} strokes")
  strokes = []
  for s in raw:
    mode = s.get("mode") if isinstance(s, dict) else None
    if mode not in cutouts.STROKE_MODES:
      raise InputError(f"each stroke needs a 'mode' of {cutouts.STROKE_MODES} and 'points'")
    pts = _points(s.get("points"), "a stroke's 'points'", 1)
    if not np.isfinite(pts).all() or (pts < 0).any() or (pts > side).any():
      raise InputError(f"stroke points must lie in the {side}x{side} frame")
    strokes.append((mode, pts))
  return outline, strokes


class EmptyAnswer(InputError):
  """An outline the server accepted whose answer holds no pixel (422, not an empty file)."""


class UploadError(InputError):
  """An upload refused, with the HTTP status that says why."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code


class App:
  """One image's session: trains (if asked) in a thread, then serves segmentations."""

  def __init__(self, workdir: str, config=None, fit_config=None, upload_dir=None):
    self.workdir = workdir
    self.config = config
    # Uploads are fitted with fit_config under upload_dir (both None: uploads are off).
    self.fit_config, self.upload_dir = fit_config, upload_dir
    self.state = "training" if config is not None else "loading"
    self.error: Optional[str] = None
    self.lock = threading.Lock()
    self.model = self.image = self.thumbnail = self.original = self.crop_box = None
    self.photo_png: Optional[bytes] = None
    self.hybrid, self.variant = False, None
    self.answers: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    self.started = time.time()
    self._loaded = None  # what check() read, for _load

  def check(self) -> None:
    """InputError for what would make the page fail later: a bad photo or config to fit,
    or a workdir that holds no usable run."""
    if self.config is not None:
      run.fit_options(self.config)
      run.prepare(self.config)
    else:
      self._loaded = run.load_run(self.workdir)  # kept: _load uses it, not a second restore

  def start(self) -> None:
    """Loads the run, or fits it first in a background thread."""
    if self.config is None:
      self._load()
    else:
      threading.Thread(target=self._train, daemon=True).start()

  def upload(self, data: bytes, content_type: str) -> None:
    """None; checks an uploaded photo and starts fitting on it, UploadError(code) if unusable."""
    if self.fit_config is None or self.upload_dir is None:
      raise UploadError(403, "this server does not take uploads (start it with --upload_dir)")
    ext = UPLOAD_TYPES.get(content_type.split(";")[0].strip().lower())
    if self.state in ("training", "loading"):  # before writing anything
      raise UploadError(409, "a net is being fitted already: wait until it is ready")
    if ext is None:
      raise UploadError(415, f"send a photo as one of {', '.join(UPLOAD_TYPES)}, "
                             f"not {content_type or 'no type'}")
    digest = hashlib.sha1(data).hexdigest()[:16]
    folder = os.path.join(self.upload_dir, digest)  # named by the server, never the client
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "photo" + ext)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
    config = self.fit_config.copy_and_resolve_references()
    config.image = path
    try:
      run.fit_options(config)
      run.prepare(config)  # decodes it whole: type, truncation, pixels, smallest side
    except InputError as e:
      shutil.rmtree(folder, ignore_errors=True)
      raise UploadError(400, str(e).replace(" " + path, "")) from None  # not our folder
    with self.lock:
      if self.state in ("training", "loading"):
        raise UploadError(409, "a net is being fitted already: wait until it is ready")
      self.workdir, self.config = os.path.join(folder, "run"), config
      self.state, self.error = "training", None
      self.answers.clear()
      self.started = time.time()
    threading.Thread(target=self._train, daemon=True).start()

  def _train(self) -> None:
    try:
      run.train_and_evaluate(self.config, self.workdir)
      self._load()
    except InputError as e:
      self.state, self.error = "error", str(e)
    except Exception as e:  # surfaced on the page; the log keeps the traceback
      logging.error("training failed: %s", traceback.format_exc())
      self.state, self.error = "error", f"training failed: {e}"

  def _load(self) -> None:
    loaded, self._loaded = self._loaded, None
    config, state, image, info = loaded or run.load_run(self.workdir)
    self.config, self.model, self.image = config, state, image
    self.variant = variants.get(config.get("variant", variants.DEFAULT))
    try:
      self.original, self.crop_box = load_image(info["image"]), info["crop_box"]
    except (InputError, KeyError) as e:  # the photo moved: the run's own square stands in
      logging.warning("the page shows the run's %dx%d image: %s", self.side, self.side, e)
      self.original, self.crop_box = image, [0, 0, self.side]
    self.hybrid, why = cutouts.can_refine(self.variant)
    if not self.hybrid and self.variant.refinable:
      logging.info("no net + GrabCut hybrid on the page: %s", why)
    h, w = self.original.shape[:2]
    small = Image.fromarray(self.original)
    if max(h, w) > PHOTO_SIDE:
      small = small.resize((round(w * PHOTO_SIDE / max(h, w)), round(h * PHOTO_SIDE / max(h, w))),
                           Image.LANCZOS)
    self.photo_png = png_bytes(np.asarray(small))
    self.thumbnail = np.asarray(Image.open(os.path.join(self.workdir, "thumbnail.png")).convert("RGB"))
    self.state = "ready"

  def status(self) -> dict:
    """Training progress for the page: state, epochs, loss history, ETA."""
    history = run.read_metrics(self.workdir)
    total = self.config.num_epochs if self.config is not None else None
    secs = [r.get("seconds", 0) for r in history[-10:]]
    per_epoch = sum(secs) / len(secs) if secs else None
    eta = per_epoch * (total - len(history)) if per_epoch is not None and total else None
    out = {"state": self.state, "error": self.error, "epoch": len(history),
           "num_epochs": total, "eta_s": eta if self.state == "training" else 0,
           "seconds_per_epoch": per_epoch, "uploads": self.upload_dir is not None,
           "history": [{"epoch": r["epoch"], "train_loss": r["train_loss"],
                        "val_loss": r["val_loss"]} for r in history]}
    if self.state == "ready":
      top, left, crop = self.crop_box
      out.update(photo={"width": self.original.shape[1], "height": self.original.shape[0],
                        "crop": {"top": top, "left": left, "side": crop}},
                 side=self.side, variant=self.variant.name, hybrid=self.hybrid,
                 run=hashlib.sha1(os.path.abspath(self.workdir).encode()).hexdigest()[:12])
    return out

  @property
  def side(self) -> int:
    """The side of the run's square image (the frame of the page's polygons)."""
    return self.image.shape[0]

  def segment(self, outline: np.ndarray, strokes=()) -> dict:
    """The JSON answer to an outline and its strokes: the net's panels, the corrected mask."""
    # The page shows mask_full and downloads cutout_url's PNG, whose alpha is that mask.
    with self.lock:
      # One key for every request: the same outline and strokes give the same answer,
      # so an undo brings back exactly the mask that was shown before.
      res = segment(self.model, self.image, outline, jax.random.key(0))
    batched = Segmentation(*(None if a is None else a[None] for a in res))
    r = cutouts.render(self.image, outline, batched, 0, zoom=1)
    soft = res.mask if res.probability is None else res.probability
    crop = cutouts.corrected_full_resolution(outline, soft, self.original, self.crop_box,
                                             strokes, hybrid=self.hybrid)
    if not crop.any():
      raise EmptyAnswer("nothing was cut out: the outline is too small or holds no object; "
                        "draw a larger loop around it")
    top, left, side = self.crop_box
    full = np.zeros(self.original.shape[:2], bool)
    full[top:top + side, left:left + side] = crop
    mask_png = png_bytes(full.astype(np.uint8) * 255)
    key = hashlib.sha1(mask_png).hexdigest()[:20]
    with self.lock:
      self.answers[key] = full
      self.answers.move_to_end(key)
      while len(self.answers) > KEPT_ANSWERS:
        self.answers.popitem(last=False)
    return {"row": data_url(r.row), "mask": data_url(r.mask), "cutout": data_url(r.cutout),
            "mask_full": "data:image/png;base64," + base64.b64encode(mask_png).decode(),
            "cutout_url": f"/api/cutout/{key}.png",
            "method": "net + GrabCut" if self.hybrid else "net",
            "coverage": float(crop.mean())}

  def cutout_png(self, path: str, soft_edges: bool = False) -> Optional[bytes]:
    """The RGBA PNG of a kept answer's `cutout_url` (alpha = its mask, soft at the edge
    with `soft_edges`), or None if none."""
    match = CUTOUT_PATH.fullmatch(path)
    with self.lock:
      full = self.answers.get(match.group(1)) if match else None
    if full is None:
      return None
    return png_bytes(cutouts.photo_rgba(self.original, full, self.crop_box, soft_edges))



def make_handler(app: App):
  class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "singleseg"
    timeout = READ_TIMEOUT  # a client that stops sending does not hold a thread forever

    def log_message(self, fmt, *args):
      logging.info("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
      self.send_response(code)
      self.send_header("Content-Type", ctype)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.send_header("X-Content-Type-Options", "nosniff")
      self.end_headers()
      self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
      self._send(code, json.dumps(obj).encode(), "application/json")

    def do_GET(self):
      path, _, query = self.path.partition("?")
      if path in STATIC_FILES:
        name, ctype = STATIC_FILES[path]
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
          return self._send(200, f.read(), ctype)
      if path == "/api/status":
        return self._json(200, app.status())
      if path.startswith("/api/cutout/"):
        png = app.cutout_png(path, soft_edges="soft=1" in query.split("&"))
        if png is None:
          return self._json(404, {"error": "that cut-out is no longer kept: draw again"})
        return self._send(200, png, "image/png")
      if path == "/api/photo.png":
        if app.photo_png is None:
          return self._json(409, {"error": "the net is not ready yet"})
        return self._send(200, app.photo_png, "image/png")
      if path in ("/api/image.png", "/api/thumbnail.png"):
        img = app.image if path == "/api/image.png" else app.thumbnail
        if img is None:
          return self._json(409, {"error": "the net is not ready yet"})
        return self._send(200, png_bytes(img), "image/png")
      return self._not_allowed()

    def _not_allowed(self):
      path = self.path.partition("?")[0]
      allow = ALLOWED.get(path, "GET" if path in GET_PATHS or CUTOUT_PATH.fullmatch(path)
                          else None)
      if allow is None:
        return self._json(404, {"error": "not found"})
      self.send_response(405)
      body = json.dumps({"error": f"{self.command} is not allowed here; use {allow}"}).encode()
      self.send_header("Allow", allow)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def do_POST(self):
      if self.path not in ("/api/segment", "/api/upload"):
        return self._not_allowed()
      limit = MAX_UPLOAD if self.path == "/api/upload" else MAX_BODY
      try:
        length = int(self.headers.get("Content-Length", ""))
      except ValueError:
        return self._json(411, {"error": "Content-Length required"})
      if length < 0 or length > limit:
        return self._json(413, {"error": f"body larger than {limit // 1024} KiB"})
      body = self.rfile.read(length)
      if self.path == "/api/upload":
        try:
          app.upload(body, self.headers.get("Content-Type", ""))
        except UploadError as e:
          return self._json(e.code, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 (every request gets an answer; the log keeps why)
          logging.error("upload failed: %s", traceback.format_exc())
          return self._json(500, {"error": f"upload failed: {type(e).__name__}: {e}"})
        return self._json(202, {"state": app.state})
      if app.state != "ready":
        return self._json(409, {"error": f"the net is not ready ({app.state})"})
      try:
        return self._json(200, app.segment(*parse_request(body, app.side)))
      except EmptyAnswer as e:
        return self._json(422, {"error": str(e)})
      except InputError as e:
        return self._json(400, {"error": str(e)})
      except Exception as e:  # noqa: BLE001 (every request gets an answer; the log keeps why)
        logging.error("segment failed: %s", traceback.format_exc())
        return self._json(500, {"error": f"segmentation failed: {type(e).__name__}: {e}"})

  return Handler


def make_server(app: App, host: str = "127.0.0.1", port: int = 8000):
  """A threading HTTP server for `app` (not yet serving; `.app` is the app); InputError
  when the address cannot be bound."""
  try:
    httpd = http.server.ThreadingHTTPServer((host, port), make_handler(app))
  except OSError as e:
    why = "already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
    raise InputError(f"cannot listen on {host}:{port}: {why}") from None
  httpd.app = app
  return httpd
