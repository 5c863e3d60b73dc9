#!/usr/bin/env python3
"""`keras-attention publish` (see keras_attention/cli/_weights.py); runs from a clone without installing."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--verbose" not in sys.argv:  # as the keras-attention command
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_attention.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
