"""Evaluation of the method on outlined ground truth: simulated sloppy outlines,
metrics with an ignore band, and baselines (outline, thumbnail round trip, GrabCut).

`outlines` and `metrics` are pure numpy; the GrabCut baselines need the optional
`eval` extra (OpenCV), imported only when they run. The driver is
`python -m experiments.evaluate`.
"""
from singleseg_jax.evaluation.baselines import (grabcut, grabcut_degenerate, grabcut_init,
                                                outline_answer, require_cv2, thumbnail_of,
                                                thumbnail_roundtrip, union_grabcut)
from singleseg_jax.evaluation.metrics import (BoundaryScore, Labels, boundary, boundary_fscore,
                                              downsample_labels, iou, resize_mask, resolve_band,
                                              split_labels)
from singleseg_jax.evaluation.outlines import (Outline, distance_transform, label_components,
                                               offset_mask, rasterise, resample_closed,
                                               simulate_outline, trace_boundary,
                                               within_distance)

__all__ = [
    "BoundaryScore", "Labels", "Outline", "boundary", "boundary_fscore", "distance_transform",
    "downsample_labels", "grabcut", "grabcut_degenerate", "grabcut_init", "iou",
    "label_components", "offset_mask", "outline_answer", "rasterise", "require_cv2",
    "resample_closed", "resize_mask", "resolve_band", "simulate_outline", "split_labels",
    "thumbnail_of", "thumbnail_roundtrip", "trace_boundary", "union_grabcut", "within_distance",
]
