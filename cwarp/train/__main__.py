"""python -m cwarp.train (and torchrun -m cwarp.train): the cwarp-train command line."""
import sys

from cwarp.train.cli import main

sys.exit(main())
