"""Constants shared across the package; torch-free, so the command lines can read them before importing torch."""

# The data set formats cwarp.data.build_dataset reads ("synthetic-hard": SyntheticFaces(difficulty="hard")).
FORMATS = ("synthetic", "synthetic-hard", "rafdb", "fer2013", "imagefolder")
SYNTHETIC_FORMATS = ("synthetic", "synthetic-hard")

# ImageNet's per-channel statistics of x / 255: the default normalization of
# the views (cwarp.nn.ContraWarpAugment) and of the probe's inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The kNN classifier of cwarp-probe and of cwarp-train's online evaluation:
# the k most cosine-similar train features vote, each with weight
# exp(similarity / temperature) (DINO's k = 20; InstDisc's temperature).
KNN_K = 20
KNN_TEMPERATURE = 0.07
