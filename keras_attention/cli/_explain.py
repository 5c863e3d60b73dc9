"""``keras-attention explain``: attention maps and Grad-CAM of images, or SENet's Fig. 6 of a dataset."""

from __future__ import annotations

from keras_attention.cli import add_common_arguments


def _query(text: str) -> tuple[float, float]:
    import argparse
    try:
        y, x = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y,X fractions such as 0.5,0.5, received {text!r}") from None
    return y, x


def _add_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "explain", help="attention maps and Grad-CAM of images; per-class excitation of a dataset",
        description="With images: write one PNG per image (the input and the prediction, Grad-CAM, "
                    "the spatial maps of the attention layers over the image and their channel gates "
                    "as heatmaps). With --excitation-per-class: write SENet's Fig. 6 (the mean channel "
                    "gate of each class at several depths) over a dataset, and its numbers as JSON."))
    p.add_argument("model", help="pretrained name, run folder, .keras / .weights.h5 file or hf:// address")
    p.add_argument("images", nargs="*", help="image files (JPEG, PNG, GIF, BMP, WebP)")
    p.add_argument("--output", required=True, help="folder for the PNG files")
    p.add_argument("--layers", nargs="+", default=None,
                   help="attention layers: names, fnmatch patterns (stage3_*) or class names (CBAM); "
                        "default all; 'none' for Grad-CAM only")
    p.add_argument("--query", type=_query, action="append", dest="queries", metavar="Y,X",
                   help="query position of pairwise attention (non-local, SAGAN, DANet) as fractions "
                        "of the feature map, e.g. 0.5,0.5 (repeatable; default the centre)")
    p.add_argument("--gradcam-layer", help="layer for Grad-CAM (default: the last stage's output)")
    p.add_argument("--class-index", type=int, help="class explained by Grad-CAM (default: the prediction)")
    p.add_argument("--no-gradcam", action="store_true", help="leave Grad-CAM out")
    p.add_argument("--excitation-per-class", action="store_true",
                   help="instead of images: SENet Fig. 6 over --dataset/--split")
    p.add_argument("--dataset", help="dataset for --excitation-per-class: TFDS name, prepared or class "
                                     "folder (default: the model's)")
    p.add_argument("--split", default="test", help="split for --excitation-per-class (default test)")
    p.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--no-progress", action="store_true")
    return p


def cmd_explain(args) -> int:
    from keras_attention._errors import InvalidInputError
    from keras_attention.evaluation import load_for_inference
    from keras_attention.explain.report import excitation_files, explain_files

    if args.excitation_per_class == bool(args.images):
        raise InvalidInputError("give either image files or --excitation-per-class (with --dataset).")
    layers = [] if args.layers in (["none"], ["None"]) else args.layers
    loaded = load_for_inference(args.model)
    if args.excitation_per_class:
        dataset = args.dataset or loaded.config.get("dataset")
        if not dataset:
            raise InvalidInputError("--excitation-per-class needs --dataset (the model's config names none).")
        png, numbers = excitation_files(loaded, dataset, args.split, args.output, data_dir=args.data_dir,
                                        layers=layers or None, batch_size=args.batch_size,
                                        progress=not args.no_progress, dpi=args.dpi)
        print(png)
        print(numbers)
        return 0
    for path in explain_files(loaded, args.images, args.output, layers=layers,
                              queries=tuple(args.queries) if args.queries else ((0.5, 0.5),),
                              gradcam=not args.no_gradcam, gradcam_layer=args.gradcam_layer,
                              class_index=args.class_index, dpi=args.dpi):
        print(path)
    return 0


def register(sub) -> None:
    _add_parser(sub).set_defaults(func=cmd_explain)
