"""Face data sets for cwarp: RAF-DB, FER2013, image folders and the built-in SyntheticFaces."""
from .build import FORMATS, build_dataset
from .common import EXPRESSIONS, FaceDataset, TensorFaces
from .decode import CorruptImageError
from .files import ImageFiles
from .render import ACTION_UNITS
from .synthetic import SyntheticFaces

__all__ = ["EXPRESSIONS", "FORMATS", "ACTION_UNITS", "FaceDataset", "TensorFaces", "ImageFiles", "SyntheticFaces",
           "CorruptImageError", "build_dataset"]
