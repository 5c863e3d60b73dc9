"""Command line: ``keras-attention <command>`` (``scripts/*.py`` are thin wrappers).

Examples::

    keras-attention train --recipe weights/_recipes/cifar10_resnet.yaml --model se_resnet20 \\
        --output runs/se_resnet20
    keras-attention train --output runs/se_resnet20 --resume        # after a crash / kill -9
    keras-attention evaluate runs/se_resnet20 --dataset cifar10 --split test --tta flip
    keras-attention predict se_resnet20.cifar10 cat.png ship.jpg --top-k 3
    keras-attention demo          # the main job: evaluate se_resnet20.cifar10, classify images

Each command lives in its own module of this package, which adds its parser in
``register(subparsers)``; :data:`COMMAND_MODULES` lists them. The Keras backend is chosen by
``KERAS_BACKEND`` (``tensorflow``, ``jax`` or ``torch``).

Errors the package raises on purpose about its input (:class:`keras_attention._errors.
KerasAttentionError`: bad options, unknown names, missing or corrupt files and data) print
one line and exit with status 2; any other exception is a bug and shows its traceback.
``KERAS_ATTENTION_TRACEBACK=1`` shows the traceback of the former too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: Modules of this package that add commands, in the order ``--help`` lists them.
COMMAND_MODULES = ("_train", "_inference", "_data", "_weights", "_explain", "_export")

def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options every command takes."""
    # Read before Keras is imported, by keras_attention._quiet_command_line.
    parser.add_argument("--verbose", action="store_true",
                        help="show the backends' start-up logs (TensorFlow C++ lines)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-attention", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 success, 2 a user error, 1 a failed check)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from keras_attention._errors import KerasAttentionError
    try:
        return args.func(args)
    except KerasAttentionError as err:
        if os.environ.get("KERAS_ATTENTION_TRACEBACK"):
            raise
        print(f"keras-attention {args.command}: error: {err}", file=sys.stderr, flush=True)
        return 2
