"""``keras-attention data prepare``: a dataset as a prepared folder (uint8 arrays + checksums),
read afterwards without TensorFlow (``--dataset DIR`` of train / evaluate / demo)."""

from __future__ import annotations

import os

from keras_attention.cli import add_common_arguments


def _add_prepare_parser(data_sub):
    p = add_common_arguments(data_sub.add_parser(
        "prepare", help="write a prepared dataset folder (NumPy arrays + SHA-256 manifest)",
        description="Write DATASET (a TFDS name such as cifar10, read with tensorflow-datasets, or "
                    "a class folder <split>/<class>/<images>) as a prepared dataset: "
                    "<split>.images.npy (uint8 N,H,W,3), <split>.labels.npy and dataset.json with "
                    "label names and SHA-256 checksums. Training and evaluation read it with NumPy "
                    "on any backend, without TensorFlow."))
    p.add_argument("dataset", help="TFDS name (cifar10, cifar100) or class-folder path")
    p.add_argument("--output", "-o", required=True, help="folder to write")
    p.add_argument("--splits", nargs="+", help="splits to write (default: all)")
    p.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--image-size", type=int, help="class folders: resize the shorter side to this "
                   "and keep the central square (needed when image sizes differ)")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return p


def cmd_prepare(args) -> int:
    from keras_attention.data.prepared import prepare_folder, prepare_tfds, read_manifest
    if os.path.isdir(os.path.expanduser(args.dataset)):
        folder = prepare_folder(os.path.expanduser(args.dataset), args.output, splits=args.splits,
                                image_size=args.image_size, overwrite=args.overwrite)
    else:
        folder = prepare_tfds(args.dataset, args.output, splits=args.splits, data_dir=args.data_dir,
                              overwrite=args.overwrite)
    manifest = read_manifest(folder)
    for split, info in manifest["splits"].items():
        size = sum(f["size"] for f in info["files"].values())
        print(f"{folder}: {split}: {info['num_examples']} images {tuple(info['image_shape'])}, "
              f"{size / 2**20:.1f} MiB")
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="dataset tools (prepare)")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    _add_prepare_parser(data_sub).set_defaults(func=cmd_prepare)
