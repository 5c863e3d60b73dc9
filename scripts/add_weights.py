"""Adds finished training runs to the weights registry (weights/<arch>.<tag>/ with a model card).

    python scripts/add_weights.py runs/se_resnet20.cifar10 [more runs...] [--notes-file NOTES.md]

Then evaluate the entry with the command in its card and check the numbers agree.
"""

import argparse
import sys
from pathlib import Path

from keras_attention.hub import add_trained_weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders")
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: the package's weights/")
    parser.add_argument("--notes-file", type=Path, help="markdown added to every card under 'Notes'")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    notes = args.notes_file.read_text() if args.notes_file else None
    for run in args.runs:
        print(add_trained_weights(run, args.weights_dir, notes=notes, overwrite=args.overwrite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
