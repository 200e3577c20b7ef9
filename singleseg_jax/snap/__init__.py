"""The snap variant: superpixels of the one image, object-like regions made from them,
and a graph net that learns which superpixels a sloppy outline meant."""
