#!/usr/bin/env python3
"""`keras-attention predict` (see keras_attention/cli/); runs from a clone without installing."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--verbose" not in sys.argv:  # as the keras-attention command
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_attention.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
