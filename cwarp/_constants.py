"""Constants shared across the package; torch-free, so the command lines can read them before importing torch."""

# The data set formats cwarp.data.build_dataset reads: the labelled ones (what
# cwarp-probe scores), then the collections of images without labels and the
# tar shards, whose .cls labels are optional. The last three are always read
# from disk batch by batch (streamed); the labelled ones are held in memory
# while they fit (cwarp.data.files.CACHE_LIMIT_BYTES). "synthetic-hard" is
# SyntheticFaces(difficulty="hard").
SYNTHETIC_FORMATS = ("synthetic", "synthetic-hard")
LABELLED_FORMATS = SYNTHETIC_FORMATS + ("rafdb", "fer2013", "imagefolder")
UNLABELLED_FORMATS = ("folder", "list")
STREAMED_FORMATS = ("folder", "list", "webdataset")
FORMATS = LABELLED_FORMATS + STREAMED_FORMATS

# The backbones cwarp.models.build_backbone builds itself; TIMM_PREFIX + NAME
# ("timm:resnet10t") is any model of the optional timm package.
ARCHS = ("resnet18", "resnet50", "resnet18-small", "convnet-small", "convnet-small-s2")
TIMM_PREFIX = "timm:"

# cwarp.local_warp's warp kinds (docs/api.md, "The math").
WARP_KINDS = ("translate", "gaussian")

# ContraWarpAugment's controls: where the negatives' warps sit, and what makes a negative differ from pos2.
WARP_CENTERS = ("landmarks", "uniform")
NEGATIVE_KINDS = ("local", "affine")

# The library's default warp sizes, (min, max) in normalized units of the
# image being warped (2 = its width): sample_local_warps, ContraWarpAugment and
# the transforms draw from these unless told otherwise. cwarp-train's recipe
# sets its own (cwarp.train.config).
DEFAULT_WARP_RADIUS = (0.15, 0.35)
DEFAULT_WARP_MAGNITUDE = (0.05, 0.15)

# ImageNet's per-channel statistics of x / 255: the default normalization of
# the views (cwarp.nn.ContraWarpAugment) and of the probe's inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Luma weights (ITU-R BT.601, as torchvision's rgb_to_grayscale) that turn an
# RGB image grey: the view renderer's grayscale views and the probe's
# colour-to-grey input adaptation.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# The kNN classifier of cwarp-probe and of cwarp-train's online evaluation:
# the k most cosine-similar train features vote, each with weight
# exp(similarity / temperature) (DINO's k = 20; InstDisc's temperature).
KNN_K = 20
KNN_TEMPERATURE = 0.07

# The most warps per image cwarp.warp_points takes: a point's solver scans
# along each warp and evaluates all K warps at every sample, so its work
# grows as K^2 (csrc/ops/warp_points/point_solver.h kPointMaxWarps, the same
# number). Training draws a few warps per view.
WARP_POINTS_MAX_WARPS = 64
