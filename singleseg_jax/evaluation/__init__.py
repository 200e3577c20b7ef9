"""Evaluation on outlined ground truth: simulated sloppy outlines (`outlines`), metrics
with an ignore band (`metrics`), baselines (`baselines`: outline, thumbnail round trip,
GrabCut), the per-image protocol (`protocol`), the evaluation of a directory of images
(`dataset`) and its reports (`reports`).

The GrabCut baselines need the optional `eval` extra (OpenCV), imported only when they
run.
"""
