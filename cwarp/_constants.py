"""Constants shared by the augmentation and the probe (torch-free)."""

# ImageNet's per-channel statistics of x / 255: the default normalization of
# the views (cwarp.nn.ContraWarpAugment) and of the probe's inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
