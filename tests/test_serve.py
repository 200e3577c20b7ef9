"""The drawing page: its HTTP API, and a real headless browser drawing a lasso."""
import base64
import contextlib
import http.client
import io
import json
import math
import os
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from experiments.web import server
from singleseg_jax import cutouts, run
from experiments.configs import default


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, photo):
  root = tmp_path_factory.mktemp("serve")
  Image.fromarray(photo).save(root / "photo.png")
  config = default.get_config("runlocal")
  config.image = str(root / "photo.png")
  run.train_and_evaluate(config, str(root / "run"))
  return str(root / "run")


@pytest.fixture(scope="module")
def snap_workdir(tmp_path_factory, photo):
  """A tiny snap run: the variant the hybrid (net + GrabCut) refines."""
  pytest.importorskip("cv2")
  root = tmp_path_factory.mktemp("snap")
  Image.fromarray(photo).save(root / "photo.png")
  config = default.get_config("runlocal")
  config.update(image=str(root / "photo.png"), variant="snap", num_samples=40,
                batch_size=16, snap_steps=2, snap_hidden=16, snap_rounds=1, num_epochs=1)
  run.train_and_evaluate(config, str(root / "run"))
  return str(root / "run")


def _started(workdir):
  app = server.App(workdir)
  app.start()
  return app


@contextlib.contextmanager
def _serving(app):
  """The (host, port) of `app` served on a free port; shut down on exit."""
  httpd = server.make_server(app, "127.0.0.1", 0)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    yield httpd.server_address[:2]
  finally:
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def base(workdir):
  with _serving(_started(workdir)) as addr:
    yield addr


@pytest.fixture(scope="module")
def snap_base(snap_workdir):
  with _serving(_started(snap_workdir)) as addr:
    yield addr


def _request(addr, method, path, body=None, headers=None):
  conn = http.client.HTTPConnection(*addr, timeout=120)
  conn.request(method, path, body=body, headers=headers or {})
  resp = conn.getresponse()
  data = resp.read()
  conn.close()
  return resp.status, data


def _decode(url):
  assert url.startswith("data:image/png;base64,")
  return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_page_and_status(base):
  code, page = _request(base, "GET", "/")
  assert code == 200 and b"<canvas" in page
  code, js = _request(base, "GET", "/static/app.js")
  assert code == 200 and b"/api/segment" in js
  code, body = _request(base, "GET", "/api/status")
  st = json.loads(body)
  assert code == 200 and st["state"] == "ready" and st["epoch"] == 3 and len(st["history"]) == 3
  code, png = _request(base, "GET", "/api/image.png")
  assert code == 200 and Image.open(io.BytesIO(png)).size == (100, 100)
  code, png = _request(base, "GET", "/api/thumbnail.png")
  assert code == 200 and Image.open(io.BytesIO(png)).size == (10, 10)
  code, png = _request(base, "GET", "/api/photo.png")  # the whole photo, not the crop
  assert code == 200 and Image.open(io.BytesIO(png)).size == (160, 120)
  assert st["photo"] == {"width": 160, "height": 120, "crop": {"top": 0, "left": 0, "side": 120}}
  assert st["variant"] == "paper" and st["hybrid"] is False and st["side"] == 100


def test_segment_returns_images_of_the_right_shape(base, photo):
  poly = [[20, 15], [85, 20], [80, 90], [15, 80]]
  code, body = _request(base, "POST", "/api/segment", json.dumps({"polygon": poly}),
                        {"Content-Type": "application/json"})
  assert code == 200, body
  out = json.loads(body)
  assert _decode(out["row"]).size == (300, 100)
  assert _decode(out["mask"]).size == (100, 100) and _decode(out["mask"]).mode == "L"
  cut = _decode(out["cutout"])
  assert cut.size == (100, 100) and cut.mode == "RGBA"
  assert 0 <= out["coverage"] <= 1
  fetch = lambda url: _request(base, "GET", url)[1]
  mask = _check_full(out, photo_size=(160, 120), crop=120, fetch=fetch)
  assert out["method"] == "net"  # the paper's net: no hybrid
  # "soft edges": the same answer with the guided filter's alpha, on the crop only.
  soft = np.asarray(Image.open(io.BytesIO(fetch(out["cutout_url"] + "?soft=1"))))
  np.testing.assert_array_equal(soft, cutouts.photo_rgba(photo, mask, (0, 0, 120), True))


def _check_full(out, photo_size, crop, fetch):
  """The download is the shown mask: RGBA at the photo's size whose alpha is the mask,
  transparent outside the (top-left) crop; `fetch(url)` is the PNG's bytes."""
  mask = np.asarray(_decode(out["mask_full"]))
  cut = Image.open(io.BytesIO(fetch(out["cutout_url"])))
  assert cut.size == photo_size and cut.mode == "RGBA" and mask.shape == photo_size[::-1]
  np.testing.assert_array_equal(np.asarray(cut)[..., 3], mask)
  assert mask.any() and not mask[:, crop:].any() and not mask[crop:].any()
  return mask > 0


def _segment(app, polygon, strokes=()):
  body = json.dumps({"polygon": polygon, "strokes": [{"mode": m, "points": p} for m, p in strokes]})
  return app.segment(*server.parse_request(body.encode(), app.side))


@pytest.fixture(scope="module")
def snap_app(snap_workdir):
  return _started(snap_workdir)


def test_snap_run_answers_with_the_full_resolution_hybrid(snap_app):
  out = _segment(snap_app, [[20, 15], [85, 20], [80, 90], [15, 80]])
  assert out["method"] == "net + GrabCut"
  _check_full(out, (160, 120), 120, snap_app.cutout_png)
  assert _decode(out["cutout"]).size == (100, 100)


def _stroke_pixels(mode, points):
  """The photo pixels a stroke in the 100x100 frame covers (the crop is its left 120x120)."""
  add, remove = cutouts.stroke_masks([(mode, np.asarray(points, float))], 100, (120, 120))
  full = np.zeros((120, 160), bool)
  full[:, :120] = add | remove
  return full


# The photo (conftest): a yellow disc at (50, 55) radius 30 in photo pixels, i.e. about
# (42, 46) radius 25 in the 100x100 frame, on a noisy blue-grey ramp.
LASSO = [[42 + 33 * math.cos(t), 46 + 33 * math.sin(t)] for t in np.linspace(0, 2 * math.pi, 30)]
ADD = [[75, 15], [92, 40]]             # background, inside the frame, far from the disc
REMOVE = [[36, 26], [48, 26]]           # in the disc, near its top (not across it: a sure-
                                        # background stripe of the disc's own colour
                                        # teaches GrabCut that the disc is background)


def test_strokes_become_grabcuts_sure_labels_in_the_hybrid(snap_app):
  """Add makes its pixels object and remove makes its pixels background (GrabCut's
  sure labels), and the object away from them stays."""
  before = _check_full(_segment(snap_app, LASSO), (160, 120), 120, snap_app.cutout_png)
  add, remove = _stroke_pixels("add", ADD), _stroke_pixels("remove", REMOVE)
  assert not before[add].any() and before[remove].all()  # the strokes have work to do
  after = _check_full(_segment(snap_app, LASSO, [("add", ADD), ("remove", REMOVE)]),
                      (160, 120), 120, snap_app.cutout_png)
  assert after[add].all() and not after[remove].any()
  assert before[50:60, 45:55].all() and after[50:60, 45:55].all()  # the disc's middle
  # A later stroke wins where it crosses an earlier one.
  again = _check_full(_segment(snap_app, LASSO, [("remove", REMOVE), ("add", REMOVE)]),
                      (160, 120), 120, snap_app.cutout_png)
  assert again[remove].all()


def test_strokes_paint_the_answer_of_a_net_the_hybrid_does_not_refine(base):
  """For the paper's net the strokes are painted on its answer, in order, and nothing
  else changes."""
  wipe = [("remove", [[x, 0], [x, 100]]) for x in range(61, 100, 2)]  # the right part
  def full(strokes=()):
    body = {"polygon": LASSO, "strokes": [{"mode": m, "points": p} for m, p in strokes]}
    code, data = _request(base, "POST", "/api/segment", json.dumps(body))
    assert code == 200, data
    return _check_full(json.loads(data), (160, 120), 120,
                       lambda url: _request(base, "GET", url)[1])
  before = full()
  after = full(wipe + [("add", ADD)])
  add = _stroke_pixels("add", ADD)
  wiped = np.zeros_like(add)
  for _, points in wipe:
    wiped |= _stroke_pixels("remove", points)
  assert before[wiped & ~add].any()  # the wipe has work to do
  assert after[add].all() and not after[wiped & ~add].any()
  np.testing.assert_array_equal(after[~(wiped | add)], before[~(wiped | add)])


def test_an_answer_with_nothing_left_is_refused_not_an_empty_file(base):
  wipe = [{"mode": "remove", "points": [[0, y], [100, y]]} for y in range(1, 100, 2)]
  code, data = _request(base, "POST", "/api/segment",
                        json.dumps({"polygon": LASSO, "strokes": wipe}))
  assert code == 422 and "nothing was cut out" in json.loads(data)["error"]


@pytest.mark.parametrize("body,code", [
    (b"not json", 400),
    (json.dumps({"polygon": [[1, 1], [2, 2]]}), 400),
    (json.dumps({"polygon": [[1, 1], [50, 2], [500, 50]]}), 400),
    (json.dumps({"polygon": [[1, 1], [50, "x"], [5, 50]]}), 400),
    (json.dumps({"polygon": [[1, 1, 1], [50, 2, 2], [5, 50, 3]]}), 400),
    (json.dumps({"polygon": [[0, 0], [1, 1], [2, 2]]}), 400),          # encloses nothing
    (json.dumps({"polygon": LASSO, "strokes": [{"mode": "erase", "points": [[1, 1]]}]}), 400),
    (json.dumps({"polygon": LASSO, "strokes": [{"mode": "add", "points": [[1, 101]]}]}), 400),
    (json.dumps({"polygon": LASSO, "strokes": [{"mode": "add", "points": []}]}), 400),
    (json.dumps({"polygon": LASSO, "strokes": {"mode": "add"}}), 400),
    (json.dumps({"points": []}), 400),
    (json.dumps({"polygon": [[1, 1]] * 6000}), 400),
    (b"x" * (server.MAX_BODY + 1), 413),
    (b'{"polygon": [[1e999999, 1], [50, 1], [50, 50]]}', 400),            # not a float
    (b'{"polygon": [[' + b"1" * 400 + b', 1], [50, 1], [50, 50]]}', 400),  # int too large
    (b"[" * 100000 + b"]" * 100000, 400),                                  # nested too deep
])
def test_bad_requests_are_refused(base, body, code):
  got, data = _request(base, "POST", "/api/segment", body)
  assert got == code, data
  assert "error" in json.loads(data)


def test_a_cutout_is_kept_for_the_last_answers_only(base, monkeypatch):
  monkeypatch.setattr(server, "KEPT_ANSWERS", 1)
  urls = []
  for strokes in ([], [{"mode": "remove", "points": [[60, 0], [60, 100]]}]):
    code, data = _request(base, "POST", "/api/segment",
                          json.dumps({"polygon": LASSO, "strokes": strokes}))
    urls.append(json.loads(data)["cutout_url"])
  assert urls[0] != urls[1]
  assert _request(base, "GET", urls[1])[0] == 200
  code, data = _request(base, "GET", urls[0])
  assert code == 404 and "no longer kept" in json.loads(data)["error"]
  for path in ("/api/cutout/../../run.json", "/api/cutout/" + "0" * 20 + ".png"):
    assert _request(base, "GET", path)[0] == 404
  assert _request(base, "POST", urls[1], b"{}")[0] == 405


def test_a_line_that_encloses_nothing_gets_a_plain_error(base):
  code, data = _request(base, "POST", "/api/segment",
                        json.dumps({"polygon": [[10, 10], [50, 50], [90, 90]]}))
  assert code == 400
  assert json.loads(data)["error"] == ("the outline encloses nothing: draw a closed loop "
                                       "around the object")


def test_a_self_crossing_outline_counts_by_what_it_encloses(base):
  bow = [[10, 10], [60, 60], [60, 10], [10, 60]]  # a bow tie: signed areas cancel
  code, data = _request(base, "POST", "/api/segment", json.dumps({"polygon": bow}))
  assert code == 200, data
  assert _decode(json.loads(data)["mask"]).size == (100, 100)


@pytest.mark.parametrize("method,path,allow", [("PUT", "/api/segment", "POST"),
                                               ("GET", "/api/segment", "POST"),
                                               ("DELETE", "/", "GET"),
                                               ("POST", "/api/status", "GET")])
def test_wrong_methods_are_405_with_allow(base, method, path, allow):
  conn = http.client.HTTPConnection(*base, timeout=30)
  conn.request(method, path, body=b"{}")
  resp = conn.getresponse()
  body = json.loads(resp.read())
  conn.close()
  assert resp.status == 405 and resp.getheader("Allow") == allow and "error" in body


def test_a_silent_client_is_dropped_after_the_read_timeout(workdir, monkeypatch):
  import socket
  monkeypatch.setattr(server, "READ_TIMEOUT", 0.5)
  with _serving(server.App(workdir)) as addr:
    sock = socket.create_connection(addr, timeout=10)
    sock.sendall(b"POST /api/segment HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    t0 = time.time()
    assert sock.recv(1024) == b""  # closed by the server, not by our 10 s timeout
    assert time.time() - t0 < 5
    sock.close()


@pytest.mark.parametrize("path", ["/../config.json", "/static/../server.py", "/static/%2e%2e/train.py",
                                  "/config.json", "/checkpoints/best", "//etc/passwd",
                                  "/static/index.html/.."])
def test_path_tricks_are_404(base, path):
  conn = http.client.HTTPConnection(*base, timeout=30)
  conn.putrequest("GET", path, skip_host=False)
  conn.endheaders()
  resp = conn.getresponse()
  assert resp.status == 404
  conn.close()


def test_unknown_post_and_not_ready(workdir):
  with _serving(server.App(workdir)) as addr:  # not started: not ready
    code, _ = _request(addr, "POST", "/api/segment", json.dumps({"polygon": [[1, 1], [50, 1], [50, 50]]}))
    assert code == 409
    code, _ = _request(addr, "GET", "/api/photo.png")
    assert code == 409
    code, _ = _request(addr, "POST", "/api/other", b"{}")
    assert code == 404


def _browser(width=1100, height=1000, downloads=None):
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  if not (chromium and driver):
    if os.environ.get("CI"):
      pytest.fail("CI must have chromium and chromedriver (see .ci/run)")
    pytest.skip("chromium/chromedriver not installed")
  webdriver = pytest.importorskip("selenium.webdriver")
  opts = webdriver.ChromeOptions()
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"):
    opts.add_argument(arg)
  opts.binary_location = chromium
  d = webdriver.Chrome(service=webdriver.ChromeService(driver), options=opts)
  # The viewport itself, not the window, is what a phone has.
  d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1,
                     "mobile": width < 600})
  if downloads:
    d.execute_cdp_cmd("Browser.setDownloadBehavior",
                      {"behavior": "allow", "downloadPath": str(downloads)})
  return d


class Page:
  """The drawing page in a browser: strokes in the 100x100 frame, waits for answers."""

  def __init__(self, d, base):
    from selenium.webdriver.common.by import By
    self.d, self.By = d, By
    d.get(f"http://{base[0]}:{base[1]}/")
    self.until(lambda: d.find_element(By.ID, "draw").is_displayed(), "drawing view")
    self.canvas = d.find_element(By.ID, "canvas")

  def until(self, ok, what, seconds=60):
    deadline = time.time() + seconds
    while not ok():
      assert time.time() < deadline, f"{what}: {self.d.find_element(self.By.ID, 'message').text}"
      time.sleep(0.05)

  def answers(self) -> int:
    return self.d.execute_script(
        "return busy ? -1 : +(document.getElementById('downloads').dataset.answers || 0)")

  def wait_answers(self, n):
    self.until(lambda: self.answers() == n, f"answer {n}")

  def offset(self, x, y):
    """Where the frame point (x, y) is, in CSS pixels from the canvas' centre."""
    return self.d.execute_script("""
      const r = canvas.getBoundingClientRect(), g = geometry(), k = r.width / canvas.width;
      return [Math.round((g.left + arguments[0] * g.unit) * k - r.width / 2),
              Math.round((g.top + arguments[1] * g.unit) * k - r.height / 2)];""", x, y)

  def stroke(self, points, mode=None):
    from selenium.webdriver.common.action_chains import ActionChains
    if mode:
      self.d.find_element(self.By.CSS_SELECTOR, f'input[name="mode"][value="{mode}"]').click()
    chain = ActionChains(self.d).move_to_element_with_offset(self.canvas, *self.offset(*points[0]))
    chain = chain.click_and_hold()
    for p in points[1:]:
      chain = chain.move_to_element_with_offset(self.canvas, *self.offset(*p))
    chain.release().perform()

  def doc(self):
    return self.d.execute_script("return doc")


def _line(a, b, n=6):
  return [[a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t] for t in np.linspace(0, 1, n)]


def test_browser_lasso_strokes_undo_and_download_what_is_shown(snap_base, tmp_path):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.keys import Keys

  d = _browser(downloads=tmp_path)
  try:
    page = Page(d, snap_base)
    page.stroke(LASSO)
    page.wait_answers(1)
    # A slow server: the remove stroke is drawn while the add is still being answered.
    d.execute_script("const f = window.fetch; window.fetch = (...a) =>"
                     " new Promise((ok) => setTimeout(ok, 1500)).then(() => f(...a));")
    page.stroke(_line(*ADD), "add")
    assert d.execute_script("return busy")
    page.stroke(_line(*REMOVE), "remove")
    page.until(lambda: page.answers() >= 2 and  # queued, then sent: not dropped
               d.execute_script("return shown && shown.key === JSON.stringify(doc)"),
               "both strokes")
    assert [s["mode"] for s in page.doc()["strokes"]] == ["add", "remove"]
    n = page.answers()
    ActionChains(d).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    page.wait_answers(n + 1)
    assert [s["mode"] for s in page.doc()["strokes"]] == ["add"]
    doc = page.doc()
    d.find_element(page.By.ID, "download-png").click()
    target = tmp_path / "cutout.png"
    page.until(target.exists, "the download")
    time.sleep(0.2)  # the browser renames the finished file into place
    got = np.asarray(Image.open(target))
    shown = np.asarray(_decode(d.execute_script("return shown.answer.mask_full")))
    code, body = _request(snap_base, "POST", "/api/segment",
                          json.dumps({"polygon": doc["outline"], "strokes": doc["strokes"]}))
    assert code == 200
    server_mask = np.asarray(_decode(json.loads(body)["mask_full"]))
    assert got.shape == (120, 160, 4)  # the original photo's resolution
    np.testing.assert_array_equal(got[..., 3], shown)
    np.testing.assert_array_equal(got[..., 3], server_mask)
    add = _stroke_pixels("add", ADD)
    assert (got[..., 3][add] == 255).mean() > 0.9  # the add stroke as drawn by a mouse
    # What is drawn on the canvas is that mask: the tint covers as much as the mask does.
    tinted = d.execute_script("""const o = shown.overlay, a = o.getContext('2d')
        .getImageData(0, 0, o.width, o.height).data; let n = 0;
        for (let i = 3; i < a.length; i += 4) n += a[i] > 0; return n / (a.length / 4);""")
    assert tinted == pytest.approx((shown > 0).mean(), rel=0.1)
    # A reload keeps the drawing, and with it the answer.
    d.refresh()
    page = Page(d, snap_base)
    page.wait_answers(1)
    assert page.doc() == doc
    assert d.find_element(page.By.ID, "download-png").get_attribute("href").endswith(
        d.execute_script("return shown.answer.cutout_url"))
    d.save_screenshot(str(tmp_path / "page.png"))
  finally:
    d.quit()


def test_browser_phone_viewport_fits_without_horizontal_scroll(snap_base):
  d = _browser(390, 844)
  try:
    page = Page(d, snap_base)
    page.stroke(LASSO)
    page.wait_answers(1)
    width, viewport, canvas_right = d.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " canvas.getBoundingClientRect().right]")
    assert width <= viewport == 390 and canvas_right <= viewport
  finally:
    d.quit()


def test_browser_shows_a_plain_error_for_an_outline_that_encloses_nothing(base):
  d = _browser()
  try:
    page = Page(d, base)
    page.stroke(_line([10, 10], [60, 60]))
    page.until(lambda: "encloses nothing" in d.find_element(page.By.ID, "message").text,
                "the error")
    assert not d.find_element(page.By.ID, "download-png").is_displayed()
  finally:
    d.quit()


def test_fit_first_mode_trains_in_the_background_then_serves(tmp_path, photo):
  Image.fromarray(photo).save(tmp_path / "p.png")
  config = default.get_config("runlocal")
  config.image = str(tmp_path / "p.png")
  config.num_epochs = 4
  app = server.App(str(tmp_path / "run"), config)
  assert app.status()["state"] == "training"
  app.start()
  deadline = time.time() + 180
  seen = set()
  while app.status()["state"] == "training":
    seen.add(app.status()["epoch"])
    assert time.time() < deadline
    time.sleep(0.05)
  st = app.status()
  assert st["state"] == "ready", st["error"]
  assert st["epoch"] == 4 and st["num_epochs"] == 4 and st["eta_s"] == 0
  assert st["seconds_per_epoch"] > 0 and st["photo"]["crop"]["side"] == 120
  # A restart on the same workdir is instant: the run is finished and saved.
  again = server.App(str(tmp_path / "run"))
  again.start()
  assert again.status()["state"] == "ready"


def test_fit_first_mode_reports_a_bad_image(tmp_path):
  config = default.get_config("runlocal")
  config.image = str(tmp_path / "missing.jpg")
  app = server.App(str(tmp_path / "run"), config)
  app.start()
  deadline = time.time() + 60
  while app.status()["state"] == "training":
    assert time.time() < deadline
    time.sleep(0.05)
  st = app.status()
  assert st["state"] == "error" and "image not found" in st["error"]


def _png(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


@pytest.fixture
def uploading(workdir, tmp_path):
  """A served paper run that takes uploads, fitted for one epoch, under tmp_path."""
  fit = default.get_config("runlocal")
  fit.num_epochs = 1
  app = server.App(workdir, fit_config=fit, upload_dir=str(tmp_path / "uploads"))
  app.start()
  with _serving(app) as addr:
    yield addr, tmp_path / "uploads"


def test_an_uploaded_photo_is_fitted_then_served(uploading, photo):
  addr, folder = uploading
  other = np.ascontiguousarray(photo[:, ::-1])  # a different photo: the disc on the right
  code, data = _request(addr, "POST", "/api/upload", _png(other), {"Content-Type": "image/png"})
  assert code == 202 and json.loads(data)["state"] == "training", data
  code, _ = _request(addr, "POST", "/api/upload", _png(other), {"Content-Type": "image/png"})
  assert code == 409  # one fit at a time
  deadline = time.time() + 120
  while (st := json.loads(_request(addr, "GET", "/api/status")[1]))["state"] == "training":
    assert time.time() < deadline
    time.sleep(0.2)
  assert st["state"] == "ready", st["error"]
  assert st["epoch"] == 1 and st["num_epochs"] == 1
  code, png = _request(addr, "GET", "/api/photo.png")
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), other)
  [run_dir] = [p for p in folder.iterdir() if (p / "run").is_dir()]
  assert (run_dir / "photo.png").exists()


@pytest.mark.parametrize("make,ctype,code,words", [
    (lambda p: b"plain text", "text/plain", 415, "send a photo"),
    (lambda p: b"not a png at all", "image/png", 400, "cannot read image"),
    (lambda p: _png(p)[:len(_png(p)) // 2], "image/png", 400, "truncated"),
    (lambda p: _png(p[:8, :8]), "image/png", 400, "too small"),
])
def test_a_bad_upload_is_refused_before_any_fit(uploading, photo, make, ctype, code, words):
  addr, folder = uploading
  got, data = _request(addr, "POST", "/api/upload", make(photo), {"Content-Type": ctype})
  assert got == code and words in json.loads(data)["error"], data
  assert not folder.exists() or not any(folder.iterdir())  # nothing kept
  assert json.loads(_request(addr, "GET", "/api/status")[1])["state"] == "ready"


def test_an_upload_over_the_limit_is_413(uploading, monkeypatch):
  monkeypatch.setattr(server, "MAX_UPLOAD", 1000)
  code, data = _request(uploading[0], "POST", "/api/upload", b"x" * 1001,
                        {"Content-Type": "image/png"})
  assert code == 413 and "error" in json.loads(data)


def test_uploads_are_off_unless_the_server_has_a_folder_for_them(base):
  code, data = _request(base, "POST", "/api/upload", b"x", {"Content-Type": "image/png"})
  assert code == 403 and "does not take uploads" in json.loads(data)["error"]


def test_browser_uploads_a_photo_and_follows_its_fit(uploading, photo, tmp_path):
  addr, _ = uploading
  other = np.ascontiguousarray(photo[::-1])
  Image.fromarray(other).save(tmp_path / "mine.png")
  d = _browser()
  try:
    page = Page(d, addr)
    first_run = d.execute_script("return info.run")
    d.find_element(page.By.ID, "upload").send_keys(str(tmp_path / "mine.png"))
    page.until(lambda: d.find_element(page.By.ID, "training").is_displayed(), "progress view")
    page.until(lambda: d.find_element(page.By.ID, "draw").is_displayed(), "the new photo", 120)
    assert d.execute_script("return info.run") != first_run
    got = d.execute_script("return [photo.naturalWidth, photo.naturalHeight, doc.outline]")
    assert got == [160, 120, None]
    page.stroke(LASSO)
    page.wait_answers(1)
  finally:
    d.quit()
