#!/usr/bin/env python3
"""Convert a timm ResNet-family checkpoint into a keras-attention model folder.

    # a local timm checkpoint (timm's Hub layout: model.safetensors [+ config.json])
    python3 scripts/convert_timm.py --checkpoint path/model.safetensors \\
        --timm-name seresnet50.a1_in1k --output out/se_resnet50.a1_in1k

    # straight from the Hugging Face Hub (standard Hub cache; honours HF_HUB_OFFLINE, HF_ENDPOINT)
    python3 scripts/convert_timm.py --hub-repo timm/seresnet50.a1_in1k --output out/se_resnet50.a1_in1k

    # (maintainers, needs timm) write/refresh the registry entries weights/<arch>.<tag>/pretrained.json
    python3 scripts/convert_timm.py --write-registry weights [--pin]

The output folder is Keras's unzipped model layout (``config.json``,
``model.weights.h5``, ``metadata.json``); ``metadata.json`` adds timm's pretrained
config (mean, std, input size, crop, interpolation, number of classes) and the
source (repo, revision, file, SHA-256). ``--verify`` compares the logits with timm's
own model on a random batch (needs timm and PyTorch). Exit status 0 on success,
2 on a usage / input / network error (a one-line message, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CHECKPOINT_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "_labels/imagenet-1k.txt"


class CliError(Exception):
    """An error reported as one line on stderr with exit status 2."""


# --------------------------------------------------------------------------------------
# Locating the checkpoint and its pretrained config.

def _download(repo_id: str, revision: str | None) -> tuple[str, str | None, str | None]:
    """(checkpoint path, config.json path or None, resolved commit) from the Hub or its cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        checkpoint = hf_hub_download(repo_id, CHECKPOINT_FILE, revision=revision)
    except LocalEntryNotFoundError as err:
        raise CliError(
            f"cannot get {repo_id}/{CHECKPOINT_FILE} (revision {revision or 'main'}): the Hub is not "
            f"reachable (or HF_HUB_OFFLINE is set) and the file is not in the Hugging Face cache "
            f"({_hub_cache()}). Download it where there is internet, e.g. `hf download {repo_id} "
            f"{CHECKPOINT_FILE} {CONFIG_FILE}`, then copy the cache or pass --checkpoint. "
            f"({type(err).__name__})") from None
    except (EntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise CliError(f"cannot get {repo_id}/{CHECKPOINT_FILE}: {type(err).__name__}: "
                       f"{str(err).splitlines()[0]}") from None
    try:
        config = hf_hub_download(repo_id, CONFIG_FILE, revision=revision)
    except (EntryNotFoundError, HfHubHTTPError, OSError):
        config = None
    match = re.search(r"[/\\]snapshots[/\\]([0-9a-f]{40})[/\\]", checkpoint)
    return checkpoint, config, (match.group(1) if match else revision)


def _hub_cache() -> str:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _weights_dirs() -> list[Path]:
    try:
        from keras_attention.hub import weights_dirs  # the hub module, once merged
        return [Path(d) for d in weights_dirs()]
    except ImportError:
        import keras_attention
        return [d for d in (REPO_ROOT / "weights", Path(keras_attention.__file__).parent / "_weights")
                if d.is_dir()]


def _registry_entry(timm_name: str) -> dict | None:
    """Our registry entry converted from ``timm_name`` (``source.model``), if any."""
    for folder in _weights_dirs():
        for path in sorted(folder.glob("*/pretrained.json")):
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("format") == "timm" and (entry.get("source") or {}).get("model") == timm_name:
                return entry
    return None


def _label_names(cfg: dict) -> dict:
    """``{"label_names": [...]}`` from the config (or its registry ``labels_file``), else ``{}``."""
    if cfg.get("label_names"):
        return {"label_names": list(cfg["label_names"])}
    for folder in _weights_dirs() if cfg.get("labels_file") else []:
        path = folder / cfg["labels_file"]
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            return {"label_names": names}
    return {}


def _pretrained_cfg(args, timm_name: str, hub_config: str | None) -> tuple[dict, str]:
    from keras_attention.convert.timm import pretrained_cfg_from_timm

    candidates = []
    if args.pretrained_cfg:
        candidates.append(("--pretrained-cfg", args.pretrained_cfg))
    if hub_config:
        candidates.append(("Hub config.json", hub_config))
    if args.checkpoint:
        local = os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), CONFIG_FILE)
        if os.path.isfile(local):
            candidates.append(("config.json next to the checkpoint", local))
    for origin, path in candidates:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError) as err:
            raise CliError(f"cannot read the pretrained config {path!r}: {err}") from None
        return pretrained_cfg_from_timm(raw), origin
    entry = _registry_entry(timm_name)
    if entry is not None:
        keys = ("input_size", "test_input_size", "crop_pct", "test_crop_pct", "crop_mode", "interpolation",
                "mean", "std", "num_classes", "license", "labels_file", "label_names")
        return {k: entry[k] for k in keys if k in entry}, f"registry entry {entry['name']}"
    raise CliError(f"no pretrained config for {timm_name!r}: no --pretrained-cfg, no config.json next to "
                   f"the checkpoint and no registry entry with source.model == {timm_name!r}. Pass "
                   f"--pretrained-cfg (timm's config.json, or a JSON object with mean, std, input_size, "
                   f"crop_pct, interpolation, num_classes).")


# --------------------------------------------------------------------------------------
# Conversion.

def _verify(timm_name: str, state: dict, model, input_size: int = 96, seed: int = 0) -> dict:
    """Max relative logit error against timm's model on a random batch (needs timm + torch)."""
    import numpy as np
    try:
        import timm
        import torch
    except ImportError as err:
        raise CliError(f"--verify needs timm and PyTorch (a test-only reference): {err}") from None
    import keras

    arch = timm_name.split(".", 1)[0]
    num_classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 0
    reference = timm.create_model(arch, pretrained=False, num_classes=num_classes).eval()
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    x = np.random.default_rng(seed).standard_normal((2, 3, input_size, input_size)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    actual = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    error = float(np.abs(actual - expected).max() / np.abs(expected).max())
    return {"max_relative_error": error, "input_shape": [2, input_size, input_size, 3],
            "timm_version": timm.__version__, "torch_version": torch.__version__}


def convert(args) -> str:
    if args.hub_repo:
        checkpoint, hub_config, revision = _download(args.hub_repo, args.revision)
        repo_id = args.hub_repo
        timm_name = args.timm_name or args.hub_repo.split("/", 1)[-1]
    else:
        checkpoint, hub_config, revision, repo_id = args.checkpoint, None, args.revision, args.repo_id
        if not os.path.isfile(checkpoint):
            raise CliError(f"no checkpoint file at {checkpoint!r}")
        timm_name = args.timm_name
        if repo_id is None:
            repo_id = f"timm/{timm_name}" if "." in timm_name else None

    import keras_attention
    from keras_attention.convert.timm import (ConversionError, create_model_from_timm, infer_model_kwargs,
                                              load_state_dict, our_architecture, save_model_folder,
                                              sha256_of, split_timm_name)

    try:
        arch = our_architecture(timm_name)
    except ValueError as err:
        raise CliError(str(err)) from None
    cfg, cfg_origin = _pretrained_cfg(args, timm_name, hub_config)
    try:
        state = load_state_dict(checkpoint)
        input_shape = (None, None, 3) if args.input_shape is None else (*args.input_shape, 3)
        model = create_model_from_timm(timm_name, state, input_shape=input_shape)
    except ConversionError as err:
        raise CliError(f"{checkpoint}: {err}") from None
    model_kwargs = {**infer_model_kwargs(timm_name, state), "input_shape": list(input_shape)}
    if "num_classes" in cfg and cfg["num_classes"] != model_kwargs.get("num_classes"):
        raise CliError(f"the pretrained config ({cfg_origin}) says num_classes={cfg['num_classes']} but the "
                       f"checkpoint's classifier has {model_kwargs.get('num_classes')} outputs")
    verification = _verify(timm_name, state, model) if args.verify else None
    if verification is not None:
        print(f"verified against timm: max relative logit error {verification['max_relative_error']:.3g}")
        if verification["max_relative_error"] > 1e-4:
            raise CliError(f"verification failed: relative error {verification['max_relative_error']:.3g} > 1e-4")
    tag = split_timm_name(timm_name)[1]
    # The folder's pretrained_cfg has the registry entry's shape (as scripts/publish.py writes it),
    # so keras_attention.load(folder or hf://...) can rebuild the architecture from it.
    pretrained_cfg = {
        **{k: v for k, v in cfg.items() if k not in ("tag", "labels_file")},
        **({"name": f"{arch}.{tag}", "tag": tag} if tag else {}),
        "architecture": arch,
        "format": "keras",
        "model_kwargs": model_kwargs,
        "classifier": "head_fc",
        **_label_names(cfg),
        "source": {"format": "timm", "model": timm_name, "repo_id": repo_id, "revision": revision,
                   "file": CHECKPOINT_FILE, "sha256": sha256_of(checkpoint),
                   "size": os.path.getsize(checkpoint)},
    }
    metadata = {
        "keras_attention_version": keras_attention.__version__,
        "pretrained_cfg": pretrained_cfg,
        "conversion": {"converter": "keras_attention.convert.timm", "pretrained_cfg_from": cfg_origin,
                       "tensors": len(state), "verification": verification},
    }
    try:
        folder = save_model_folder(model, args.output, metadata, overwrite=args.overwrite)
    except FileExistsError as err:
        raise CliError(str(err)) from None
    print(f"wrote {folder} ({arch}, {model.count_params():,} parameters, from {timm_name})")
    return folder


# --------------------------------------------------------------------------------------
# Registry entries (maintainers; needs timm for its pretrained configs).

PAPERS = {
    "resnet": {"title": "Deep Residual Learning for Image Recognition", "arxiv": "1512.03385"},
    "resnext": {"title": "Aggregated Residual Transformations for Deep Neural Networks", "arxiv": "1611.05431"},
    "se": {"title": "Squeeze-and-Excitation Networks", "arxiv": "1709.01507"},
    "eca": {"title": "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
            "arxiv": "1910.03151"},
}
RESNET_D_PAPER = {"title": "Bag of Tricks for Image Classification with Convolutional Neural Networks",
                  "arxiv": "1812.01187"}
PRETRAINING = {"fb_ssl_yfcc100m": "YFCC100M (semi-supervised, Yalniz et al. 2019, arXiv:1905.00546)",
               "fb_swsl_ig1b": "IG-1B-Targeted (semi-weakly supervised, Yalniz et al. 2019, arXiv:1905.00546)"}


def _paper(arch: str) -> dict:
    for prefix in ("eca", "se"):
        if arch.startswith(prefix + "_"):
            return PAPERS[prefix]
    return PAPERS["resnext" if "resnext" in arch else "resnet"]


def registry_entry(timm_name: str, cfg: dict, model_kwargs: dict, default: bool, timm_version: str) -> dict:
    from keras_attention.convert.timm import our_architecture, pretrained_cfg_from_timm

    arch = our_architecture(timm_name)
    tag = timm_name.split(".", 1)[1]
    ours = pretrained_cfg_from_timm(cfg)
    related = []
    if re.search(r"resne(t|xt)\d+[dt](_|$)", arch):  # ResNet-D / -T: deep stem, avg-pool shortcut
        related.append(RESNET_D_PAPER)
    pretraining = next((v for k, v in PRETRAINING.items() if tag.startswith(k)), None)
    notes = ("Converted at load time from timm's model.safetensors by keras_attention.convert "
             "(logits match timm's model to < 1e-4 relative error on random weights: "
             "tests/convert/test_timm.py). hub.revision and files.sha256/size are null because "
             f"the Hub could not be reached when this entry was written (from timm {timm_version}'s "
             "registry, offline); run `scripts/convert_timm.py --write-registry weights --pin` "
             "online to pin them. metrics are timm's to report; not measured here.")
    if pretraining:
        notes += f" Pretrained on {pretraining}, fine-tuned on ImageNet-1k."
    entry = {
        "schema_version": 1,
        "name": f"{arch}.{tag}",
        "architecture": arch,
        "tag": tag,
        "default": default,
        "format": "timm",
        "files": {CHECKPOINT_FILE: {"sha256": None, "size": None}},
        "hub": {"repo_id": cfg["hf_hub_id"], "revision": None},
        "model_kwargs": {**model_kwargs, "input_shape": ours["input_size"]},
        "classifier": "head_fc",
        "input_size": ours["input_size"],
        "crop_pct": ours["crop_pct"],
        "interpolation": ours["interpolation"],
        "mean": ours["mean"],
        "std": ours["std"],
        "num_classes": ours["num_classes"],
        "labels_file": LABELS_FILE,
        "license": ours.get("license", "unknown"),
        "paper": _paper(arch),
        "dataset": "imagenet-1k",
        "metrics": {"top1": None, "top5": None, "split": "validation", "dataset": "imagenet-1k",
                    "command": None},
        "source": {"repo_id": cfg["hf_hub_id"], "model": timm_name, "timm_version": timm_version,
                   **{k: ours[k] for k in ("origin_url", "paper_ids") if k in ours},
                   **({"url": cfg["url"]} if cfg.get("url") else {})},
        "notes": notes,
    }
    # timm's evaluation-time extras, next to the fields they refine.
    ordered = {}
    for key, value in entry.items():
        ordered[key] = value
        extra = {"input_size": "test_input_size", "crop_pct": "test_crop_pct",
                 "interpolation": "crop_mode"}.get(key)
        if extra in ours:
            ordered[extra] = ours[extra]
        if key == "paper" and related:
            ordered["related_papers"] = related
    return ordered


def dump_json(obj) -> str:
    """``json.dumps(indent=2)`` with lists of numbers/strings kept on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def _pin(entry: dict) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    repo_id = entry["hub"]["repo_id"]
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except (HfHubHTTPError, OSError) as err:
        raise CliError(f"--pin: cannot read {repo_id} from the Hub: {type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}") from None
    entry["hub"]["revision"] = info.sha
    for sibling in info.siblings or []:
        if sibling.rfilename in entry["files"] and sibling.lfs is not None:
            entry["files"][sibling.rfilename] = {"sha256": sibling.lfs.sha256, "size": sibling.size}


def write_registry(args) -> list[str]:
    try:
        import timm
        import timm.models
    except ImportError as err:
        raise CliError(f"--write-registry reads timm's pretrained configs and needs timm: {err}") from None
    import numpy as np
    from keras_attention.convert.timm import TIMM_ARCHITECTURES, infer_model_kwargs

    out = Path(args.write_registry)
    out.mkdir(parents=True, exist_ok=True)
    existing = {}
    for path in out.glob("*/pretrained.json"):
        existing[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    ours_default = {e["architecture"] for e in existing.values() if e.get("format") != "timm" and e.get("default")}
    written = []
    pattern = re.compile(args.only) if args.only else None
    for timm_arch, arch in sorted(TIMM_ARCHITECTURES.items()):
        names = [n for n in timm.list_pretrained(f"{timm_arch}.*") if n.split(".")[0] == timm_arch]
        if pattern is not None:
            names = [n for n in names if pattern.search(n)]
        if not names:
            continue
        reference = timm.create_model(timm_arch, pretrained=False)
        shapes = {k: np.zeros(v.shape, dtype="float32") for k, v in reference.state_dict().items()
                  if k.endswith("se.fc1.weight") or k == "fc.weight"}
        kwargs = infer_model_kwargs(timm_arch, shapes)
        default_tag = timm.models.get_pretrained_cfg(timm_arch).tag
        for timm_name in names:
            cfg = timm.models.get_pretrained_cfg(timm_name).to_dict()
            if cfg.get("num_classes") != 1000 or not cfg.get("hf_hub_id"):
                print(f"skip {timm_name}: num_classes={cfg.get('num_classes')}, hf_hub_id={cfg.get('hf_hub_id')}")
                continue
            entry = registry_entry(timm_name, cfg, kwargs, default=(cfg["tag"] == default_tag
                                                                    and arch not in ours_default),
                                   timm_version=timm.__version__)
            old = existing.get(entry["name"])
            if old is not None and old.get("format") != "timm":
                print(f"skip {entry['name']}: an entry of format {old.get('format')!r} exists")
                continue
            if old is not None and old.get("hub", {}).get("revision"):
                entry["hub"]["revision"] = old["hub"]["revision"]  # keep a pin made earlier
                entry["files"] = old["files"]
            if args.pin:
                _pin(entry)
            folder = out / entry["name"]
            folder.mkdir(exist_ok=True)
            tmp = folder / "pretrained.json.tmp"
            tmp.write_text(dump_json(entry) + "\n", encoding="utf-8")
            os.replace(tmp, folder / "pretrained.json")
            written.append(entry["name"])
    print(f"wrote {len(written)} entries under {out}")
    return written


# --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="local timm model.safetensors")
    source.add_argument("--hub-repo", help="Hub repo id, e.g. timm/seresnet50.a1_in1k")
    source.add_argument("--write-registry", metavar="DIR",
                        help="write weights/<arch>.<tag>/pretrained.json entries for timm's checkpoints "
                             "(needs timm)")
    parser.add_argument("--timm-name", help="timm model name with tag, e.g. seresnet50.a1_in1k "
                                            "(default with --hub-repo: the repo name)")
    parser.add_argument("--revision", help="Hub revision (commit) to download / record")
    parser.add_argument("--repo-id", help="with --checkpoint: the Hub repo it came from (recorded)")
    parser.add_argument("--pretrained-cfg", help="JSON file with the pretrained config (timm's config.json)")
    parser.add_argument("--output", help="output folder (Keras unzipped model layout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--input-shape", type=int, nargs=2, metavar=("H", "W"),
                        help="fixed model input size (default: any size)")
    parser.add_argument("--verify", action="store_true",
                        help="compare logits with timm's model on a random batch (needs timm + torch)")
    parser.add_argument("--pin", action="store_true",
                        help="with --write-registry: read revision/sha256/size from the Hub (online)")
    parser.add_argument("--only", help="with --write-registry: regex on timm names to include")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.write_registry:
            write_registry(args)
            return 0
        if not args.output:
            parser.error("--output is required to convert")
        if args.checkpoint and not args.timm_name:
            parser.error("--timm-name is required with --checkpoint")
        convert(args)
        return 0
    except CliError as err:
        print(f"convert_timm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
