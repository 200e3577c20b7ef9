"""Outlines from files and boxes, and the cut-outs made from an answer."""
import json

import numpy as np
import pytest
from PIL import Image

from singleseg_jax import InputError, cutouts


@pytest.mark.parametrize("outlines,boxes,frame,message", [
    ([], ["10,10,200,50"], "net", "outside the 100x100"),
    ([], ["50,50,10,10"], "net", "x0 < x1"),
    ([], ["1,2,3"], "net", "x0,y0,x1,y1"),
    (["/nope.json"], [], "net", "cannot read outline"),
    (["/nope.png"], [], "net", "outline not found"),
    (["BAD_JSON"], [], "net", "expected"),
    (["DEGENERATE"], [], "net", "degenerate"),
    (["WRONG_SIZE"], [], "net", "expected 100x100"),
    ([], ["0,0,150,50"], "original", "outside the cropped square"),
    ([], [], "net", "at least one"),
])
def test_bad_outlines_are_input_errors(tmp_path, outlines, boxes, frame, message):
  (tmp_path / "bad.json").write_text(json.dumps({"polygon": "nope"}))
  (tmp_path / "deg.json").write_text(json.dumps([[1, 1], [5, 5], [9, 9]]))
  Image.fromarray(np.zeros((7, 9), np.uint8)).save(tmp_path / "wrong.png")
  subst = {"BAD_JSON": tmp_path / "bad.json", "DEGENERATE": tmp_path / "deg.json",
           "WRONG_SIZE": tmp_path / "wrong.png"}
  outlines = [str(subst.get(o, o)) for o in outlines]
  info = {"crop_box": [0, 0, 120], "original_hw": [120, 160]}
  with pytest.raises(InputError, match=message):
    cutouts.collect_outlines(outlines, boxes, frame, info, 100)


def test_full_resolution_mask_and_rgba_follow_the_crop():
  original = np.zeros((120, 160, 3), np.uint8)
  original[..., 0] = 200
  mask = np.zeros((100, 100), bool)
  mask[:, :50] = True  # the left half of the square
  big, cut = cutouts.full_resolution(mask, original, (0, 20, 120))
  assert big.shape == (120, 120) and cut.shape == (120, 120, 4)
  assert big[:, :60].all() and not big[:, 60:].any()
  np.testing.assert_array_equal(cut[..., 3], np.where(big, 255, 0))
  np.testing.assert_array_equal(cut[..., :3], original[:, 20:140])


def test_the_outline_rule_fills_self_crossing_outlines_and_reaches_the_frame_edge():
  bow = [[10, 10], [60, 60], [60, 10], [10, 60]]  # signed areas cancel; two triangles show
  mask = cutouts.outline_mask(bow, 100, "bow")
  assert 0.05 < mask.mean() < 0.25 and mask[35, 15] and not mask[15, 35]
  info = {"crop_box": [0, 0, 120], "original_hw": [120, 160]}
  (name, whole), = cutouts.collect_outlines([], ["0,0,100,100"], "net", info, 100)
  assert whole.all()  # a box to the frame's edge, not an error about point (101, 0)
  with pytest.raises(InputError, match=r"\(150, 0\) lies outside"):
    cutouts.collect_outlines([], ["0,0,150,50"], "net", info, 100)
