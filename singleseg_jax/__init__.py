"""singleseg_jax: interactive segmentation with a CNN fitted to a single image."""
from singleseg_jax.errors import InputError
from singleseg_jax.image import (PreparedImage, load_image, polygon_mask, prepare_image,
                                 resize_uint8)
from singleseg_jax.paper.data import Dataset, make_dataset, make_pairs, network_input
from singleseg_jax.paper.layers import ConvTranspose, conv_transpose
from singleseg_jax.paper.masks import sample_mask, sample_masks
from singleseg_jax.paper.model import Upsampler, count_params, flops_per_sample
from singleseg_jax.paper.predict import mask_from_output
from singleseg_jax.segment import Segmentation, segment
from singleseg_jax.train import (Plateau, TrainState, evaluate, make_optimizer, train_epoch,
                                 train_step)

__all__ = [
    "ConvTranspose", "Dataset", "InputError", "Plateau", "PreparedImage", "Segmentation",
    "TrainState", "Upsampler", "conv_transpose", "count_params", "evaluate",
    "flops_per_sample", "load_image", "make_dataset", "make_optimizer", "make_pairs",
    "mask_from_output", "network_input", "polygon_mask", "prepare_image", "resize_uint8",
    "sample_mask", "sample_masks", "segment", "train_epoch", "train_step",
]
