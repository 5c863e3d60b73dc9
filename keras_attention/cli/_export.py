"""``keras-attention export``: SavedModel, ONNX or LiteRT through Keras's ``model.export``."""

from __future__ import annotations

from keras_attention.cli import add_common_arguments


def _add_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "export", help="export to TensorFlow SavedModel, ONNX or LiteRT",
        description="Export a model (float32, NHWC, logits) with Keras's model.export, write "
                    "<output>.README.md and <output>.json next to it (input, preprocessing, labels), "
                    "and check the artifact in its own runtime against Keras."))
    p.add_argument("model", help="pretrained name, run folder, .keras / .weights.h5 file or hf:// address")
    p.add_argument("--format", required=True, choices=["tf_saved_model", "onnx", "litert"])
    p.add_argument("--output", help="artifact path (a folder for tf_saved_model, a .tflite file for litert); "
                                    "default <model>.onnx, <model>.tflite or <model>_saved_model")
    p.add_argument("--no-verify", action="store_true",
                   help="do not run the artifact in its runtime to compare it with Keras")
    return p


def cmd_export(args) -> int:
    from keras_attention.export import default_output, export
    output = args.output or default_output(args.model, args.format)
    command = "keras-attention " + " ".join(a for a in args.argv if a != "--verbose")
    result = export(args.model, args.format, output, verify=not args.no_verify, command=command)
    print(f"wrote {result.path} ({args.format}); preprocessing and labels: {result.readme}")
    if result.max_rel_error is not None:
        print(f"runtime vs Keras: max abs error {result.max_abs_error:.3g}, "
              f"max relative error {result.max_rel_error:.3g}")
    elif not args.no_verify:
        print("not checked: the runtime for this format is not installed")
    return 0


def register(sub) -> None:
    _add_parser(sub).set_defaults(func=cmd_export)
