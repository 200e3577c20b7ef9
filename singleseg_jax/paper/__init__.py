"""The seed's method: random rectangles and discs, the noisy tiled grey thumbnail as the
input, six transposed convolutions from 10x10 to 100x100."""
