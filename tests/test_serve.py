"""The drawing page: its HTTP API, and a real headless browser drawing a lasso."""
import base64
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
from singleseg_jax import run
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
def base(workdir):
  app = server.App(workdir)
  app.start()
  httpd = server.make_server(app, "127.0.0.1", 0)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  yield httpd.server_address[:2]
  httpd.shutdown()
  httpd.server_close()


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


def test_segment_returns_images_of_the_right_shape(base):
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
  assert "cutout_full" not in out  # the paper's net: no hybrid


def test_snap_run_adds_the_full_resolution_hybrid(tmp_path, photo):
  pytest.importorskip("cv2")
  Image.fromarray(photo).save(tmp_path / "photo.png")
  config = default.get_config("runlocal")
  config.update(image=str(tmp_path / "photo.png"), variant="snap", num_samples=40,
                batch_size=16, snap_steps=2, snap_hidden=16, snap_rounds=1, num_epochs=1)
  run.train_and_evaluate(config, str(tmp_path / "run"))
  app = server.App(str(tmp_path / "run"))
  app.start()
  body = json.dumps({"polygon": [[20, 15], [85, 20], [80, 90], [15, 80]]}).encode()
  out = app.segment(server.parse_outline(body, 100))
  full = _decode(out["cutout_full"])
  assert full.size == (120, 120) and full.mode == "RGBA"  # the photo's 120x120 crop
  assert _decode(out["cutout"]).size == (100, 100)


@pytest.mark.parametrize("body,code", [
    (b"not json", 400),
    (json.dumps({"polygon": [[1, 1], [2, 2]]}), 400),
    (json.dumps({"polygon": [[1, 1], [50, 2], [500, 50]]}), 400),
    (json.dumps({"polygon": [[1, 1], [50, "x"], [5, 50]]}), 400),
    (json.dumps({"polygon": [[1, 1, 1], [50, 2, 2], [5, 50, 3]]}), 400),
    (json.dumps({"polygon": [[0, 0], [1, 1], [2, 2]]}), 400),          # encloses nothing
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
  app = server.App(workdir)
  httpd = server.make_server(app, "127.0.0.1", 0)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    sock = socket.create_connection(httpd.server_address[:2], timeout=10)
    sock.sendall(b"POST /api/segment HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    t0 = time.time()
    assert sock.recv(1024) == b""  # closed by the server, not by our 10 s timeout
    assert time.time() - t0 < 5
    sock.close()
  finally:
    httpd.shutdown()
    httpd.server_close()


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
  app = server.App(workdir)  # not started: not ready
  httpd = server.make_server(app, "127.0.0.1", 0)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    addr = httpd.server_address[:2]
    code, _ = _request(addr, "POST", "/api/segment", json.dumps({"polygon": [[1, 1], [50, 1], [50, 50]]}))
    assert code == 409
    code, _ = _request(addr, "POST", "/api/other", b"{}")
    assert code == 404
  finally:
    httpd.shutdown()
    httpd.server_close()


def _browser():
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  if not (chromium and driver):
    if os.environ.get("CI"):
      pytest.fail("CI must have chromium and chromedriver (see .ci/run)")
    pytest.skip("chromium/chromedriver not installed")
  webdriver = pytest.importorskip("selenium.webdriver")
  opts = webdriver.ChromeOptions()
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1100,1000", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"):
    opts.add_argument(arg)
  opts.binary_location = chromium
  return webdriver.Chrome(service=webdriver.ChromeService(driver), options=opts)


def test_browser_draws_a_lasso_and_gets_the_cutout(base, tmp_path):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By

  d = _browser()
  try:
    d.get(f"http://{base[0]}:{base[1]}/")
    deadline = time.time() + 60
    while not d.find_element(By.ID, "draw").is_displayed():
      assert time.time() < deadline, "drawing view never appeared"
      time.sleep(0.1)
    canvas = d.find_element(By.ID, "canvas")
    pts = [(int(140 * math.cos(t)), int(150 * math.sin(t))) for t in np.linspace(0, 2 * math.pi, 25)]
    chain = ActionChains(d).move_to_element_with_offset(canvas, *pts[0]).click_and_hold()
    for p in pts[1:]:
      chain = chain.move_to_element_with_offset(canvas, *p)
    chain.release().perform()
    deadline = time.time() + 90
    while not d.find_elements(By.CSS_SELECTOR, "#results li"):
      assert time.time() < deadline, d.find_element(By.ID, "message").text
      time.sleep(0.1)
    imgs = d.find_elements(By.CSS_SELECTOR, "#results li img")
    assert len(imgs) == 3
    sizes = d.execute_script(
        "return [...document.querySelectorAll('#results li img')].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert sizes == [[True, 300, 100], [True, 100, 100], [True, 100, 100]]
    links = [a.get_attribute("download") for a in d.find_elements(By.CSS_SELECTOR, "#results a")]
    assert links == ["cutout_1.png", "mask_1.png"]
    assert not d.find_element(By.ID, "busy").is_displayed()
    d.find_element(By.ID, "undo").click()
    assert not d.find_elements(By.CSS_SELECTOR, "#results li")
    d.save_screenshot(str(tmp_path / "page.png"))
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
