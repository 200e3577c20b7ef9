"""The drawing page's HTTP API (standard library only), separate from its entry point.

Routes (everything else is 404; nothing is ever read from a path the client names):
  GET  /                 the page; /static/app.js and /static/style.css its code
  GET  /api/status       {"state": "training"|"ready"|"error", epochs, history, eta_s, ...}
  GET  /api/image.png    the 100x100 image;  GET /api/thumbnail.png  its 10x10 thumbnail
  POST /api/segment      {"polygon": [[x, y], ...]} in the 100x100 frame ->
                         {"row", "mask", "cutout"} as PNG data URLs, plus "cutout_full"
                         (the net + GrabCut hybrid at the crop's full resolution) where
                         the variant allows it and OpenCV is installed
Bad requests get 4xx with {"error": "..."}: bodies over MAX_BODY bytes (413), bad JSON
or polygons (400), segmentation before the net is ready (409).
"""
from __future__ import annotations

import base64
import errno
import http.server
import io
import json
import os
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
READ_TIMEOUT = 30  # seconds a connection may sit idle mid-request
ALLOWED = {"/api/segment": "POST"}
GET_PATHS = {*STATIC_FILES, "/api/status", "/api/image.png", "/api/thumbnail.png"}


def png_bytes(array: np.ndarray) -> bytes:
  """The PNG encoding of a uint8 array."""
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def data_url(array: np.ndarray) -> str:
  """The array as a PNG data URL."""
  return "data:image/png;base64," + base64.b64encode(png_bytes(array)).decode()


def parse_outline(body: bytes, side: int) -> np.ndarray:
  """The request's polygon as a side x side bool mask, by the outline rule every front
  end shares (`cutouts.outline_mask`); InputError for anything unusable."""
  try:
    data = json.loads(body)
  except (ValueError, UnicodeDecodeError, RecursionError):
    raise InputError("body is not JSON (or nested too deep)") from None
  points = data.get("polygon") if isinstance(data, dict) else None
  if not isinstance(points, list) or not 3 <= len(points) <= MAX_POINTS:
    raise InputError(f"'polygon' must be a list of 3 to {MAX_POINTS} [x, y] points")
  try:
    arr = np.asarray(points, np.float64)
  except (TypeError, ValueError, OverflowError):
    raise InputError("polygon points must be [x, y] numbers") from None
  if arr.ndim != 2 or arr.shape[1] != 2:
    raise InputError("polygon points must be [x, y] numbers")
  return cutouts.outline_mask(arr, side, "polygon")


class App:
  """One image's session: trains (if asked) in a thread, then serves segmentations."""

  def __init__(self, workdir: str, config=None):
    self.workdir = workdir
    self.config = config
    self.state = "training" if config is not None else "loading"
    self.error: Optional[str] = None
    self.lock = threading.Lock()
    self.model = self.image = self.thumbnail = self.original = self.crop_box = None
    self.started = time.time()
    self.requests = 0

  def check(self) -> None:
    """InputError for what would make the page fail later: a bad photo or config to fit,
    or a workdir that holds no usable run."""
    if self.config is not None:
      run.fit_options(self.config)
      run.prepare(self.config)
    else:
      run.load_run(self.workdir)

  def start(self) -> None:
    """Loads the run, or fits it first in a background thread."""
    if self.config is None:
      self._load()
    else:
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
    config, state, image, info = run.load_run(self.workdir)
    self.config, self.model, self.image = config, state, image
    self.original, self.crop_box = None, info.get("crop_box")
    variant = variants.get(config.get("variant", variants.DEFAULT))
    ok, why = cutouts.can_refine(variant)
    if ok:
      try:
        self.original = load_image(info["image"])
      except InputError as e:
        why = str(e)
    if self.original is None and variant.refinable:
      logging.info("no full-resolution net + GrabCut cut-outs on the page: %s", why)
    self.thumbnail = np.asarray(Image.open(os.path.join(self.workdir, "thumbnail.png")).convert("RGB"))
    self.state = "ready"

  def status(self) -> dict:
    """Training progress for the page: state, epochs, loss history, ETA."""
    history = run.read_metrics(self.workdir)
    total = self.config.num_epochs if self.config is not None else None
    secs = [r.get("seconds", 0) for r in history[-10:]]
    eta = (sum(secs) / len(secs)) * (total - len(history)) if secs and total else None
    return {"state": self.state, "error": self.error, "epoch": len(history),
            "num_epochs": total, "eta_s": eta if self.state == "training" else 0,
            "history": [{"epoch": r["epoch"], "train_loss": r["train_loss"],
                         "val_loss": r["val_loss"]} for r in history]}

  @property
  def side(self) -> int:
    """The side of the run's square image (the frame of the page's polygons)."""
    return self.image.shape[0]

  def segment(self, outline: np.ndarray) -> dict:
    """The answer to one outline mask: PNG data URLs of the row, mask and cut-outs."""
    with self.lock:
      self.requests += 1
      key = jax.random.key(self.requests)
      res = segment(self.model, self.image, outline, key)
    batched = Segmentation(*(None if a is None else a[None] for a in res))
    r = cutouts.render(self.image, outline, batched, 0, zoom=1)
    reply = {"row": data_url(r.row), "mask": data_url(r.mask), "cutout": data_url(r.cutout),
             "coverage": float(res.mask.mean())}
    if self.original is not None:  # the evaluation's best method, at full size
      _, cut = cutouts.full_resolution_hybrid(outline, res.probability, self.original,
                                              self.crop_box)
      reply["cutout_full"] = data_url(cut)
    return reply


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
      path = self.path.split("?", 1)[0]
      if path in STATIC_FILES:
        name, ctype = STATIC_FILES[path]
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
          return self._send(200, f.read(), ctype)
      if path == "/api/status":
        return self._json(200, app.status())
      if path in ("/api/image.png", "/api/thumbnail.png"):
        img = app.image if path == "/api/image.png" else app.thumbnail
        if img is None:
          return self._json(409, {"error": "the net is not ready yet"})
        return self._send(200, png_bytes(img), "image/png")
      return self._not_allowed()

    def _not_allowed(self):
      path = self.path.split("?", 1)[0]
      allow = ALLOWED.get(path, "GET" if path in GET_PATHS else None)
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
      if self.path != "/api/segment":
        return self._not_allowed()
      try:
        length = int(self.headers.get("Content-Length", ""))
      except ValueError:
        return self._json(411, {"error": "Content-Length required"})
      if length < 0 or length > MAX_BODY:
        return self._json(413, {"error": f"body larger than {MAX_BODY} bytes"})
      body = self.rfile.read(length)
      if app.state != "ready":
        return self._json(409, {"error": f"the net is not ready ({app.state})"})
      try:
        return self._json(200, app.segment(parse_outline(body, app.side)))
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
