"""``keras-attention convert``: a timm checkpoint -> a Keras model folder; timm's configs -> entries.

Two maintainer tools on top of :mod:`keras_attention.convert.timm`:

- :func:`convert_checkpoint`: a local ``model.safetensors`` or a Hub repo (``timm/...``) ->
  Keras's unzipped model folder (``config.json``, ``model.weights.h5``, ``metadata.json``
  with the pretrained config and the source's repo, revision and SHA-256), written by the
  weights package's one Hub-folder writer; optionally checked against timm itself;
- :func:`write_timm_registry`: one ``weights/<arch>.<tag>/pretrained.json`` per timm
  checkpoint we convert, from timm's pretrained configs (needs timm), with the pretrained
  entry builder of :mod:`keras_attention.weights`; ``pin=True`` reads each repo's commit and
  file hashes from the Hub.

This module sits above :mod:`keras_attention.weights` (which itself imports
:mod:`keras_attention.convert.timm` for the ``"timm"`` format), so ``keras_attention.convert``
does not import it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import huggingface_hub
import keras
import numpy as np
from huggingface_hub.errors import HfHubHTTPError

from keras_attention._errors import InvalidInputError, KerasAttentionError, MissingFileError
from keras_attention._files import atomic_write_text, sha256_file
from keras_attention.convert.timm import (PARITY_RTOL, TIMM_ARCHITECTURES, classifier_keys,
                                          create_model_from_timm, infer_model_kwargs, load_state_dict,
                                          our_architecture, pretrained_cfg_from_timm, split_timm_name)
from keras_attention.weights import (PRETRAINED_FILENAME, WeightsError, WeightsNotFoundError, entry_cfg,
                                     pretrained_entry, related_papers_for, save_hub_folder)
from keras_attention.weights._download import download, snapshot_commit
from keras_attention.weights._registry import scan

CHECKPOINT_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "_labels/imagenet-1k.txt"
#: Fields of a pretrained config the converted folder needs.
REQUIRED_CFG = ("input_size", "crop_pct", "interpolation", "mean", "std")
#: timm's extra evaluation and provenance fields kept in the converted folder's config.
_EXTRA_CFG = ("test_input_size", "test_crop_pct", "crop_mode", "hf_hub_id", "origin_url", "paper_ids",
              "timm_architecture")
#: Tags of checkpoints pretrained on other data before ImageNet-1k (named in the entry's notes).
PRETRAINING = {"fb_ssl_yfcc100m": "YFCC100M (semi-supervised, Yalniz et al. 2019, arXiv:1905.00546)",
               "fb_swsl_ig1b": "IG-1B-Targeted (semi-weakly supervised, Yalniz et al. 2019, arXiv:1905.00546)"}


class TimmReferenceError(KerasAttentionError, ImportError):
    """timm / PyTorch (the test-only reference) are needed and not installed."""


def _timm():
    try:
        import timm  # noqa: PLC0415 - optional, test-only reference; never a runtime dependency
        import timm.models  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError as err:
        raise TimmReferenceError(f"This needs timm and PyTorch (the test-only reference; "
                                 f"../shared/tools/install-timm-reference installs them): {err}") from None
    return timm, torch


# --------------------------------------------------------------------------------------
# A checkpoint -> a Keras model folder
# --------------------------------------------------------------------------------------

def _from_hub(repo_id: str, revision: str | None) -> tuple[str, str | None, str | None]:
    """(checkpoint path, config.json path or None, resolved commit) from the Hub or its cache."""
    checkpoint = download(repo_id, CHECKPOINT_FILE, revision or "main", context=f"timm checkpoint {repo_id}")
    try:
        config = download(repo_id, CONFIG_FILE, revision or "main", context=f"timm checkpoint {repo_id}")
    except WeightsNotFoundError:
        config = None
    return checkpoint, config, snapshot_commit(checkpoint, revision)


def _registry_cfg(timm_name: str) -> dict | None:
    """Our registry entry converted from ``timm_name`` (``source.model``), labels expanded."""
    for entry in scan().entries.values():
        if entry.cfg["format"] == "timm" and (entry.cfg.get("source") or {}).get("model") == timm_name:
            return entry_cfg(entry)
    return None


def _pretrained_cfg(timm_name: str, *, pretrained_cfg=None, hub_config=None, checkpoint=None) -> tuple[dict, str]:
    """(our pretrained-config fields, where they came from)."""
    candidates = []
    if pretrained_cfg:
        candidates.append(("--pretrained-cfg", pretrained_cfg))
    if hub_config:
        candidates.append(("Hub config.json", hub_config))
    if checkpoint:
        local = Path(checkpoint).resolve().parent / CONFIG_FILE
        if local.is_file():
            candidates.append(("config.json next to the checkpoint", local))
    for origin, path in candidates:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidInputError(f"Cannot read the pretrained config {str(path)!r}: {err}") from None
        return pretrained_cfg_from_timm(raw), origin
    cfg = _registry_cfg(timm_name)
    if cfg is not None:
        keys = ("input_size", "test_input_size", "crop_pct", "test_crop_pct", "crop_mode", "interpolation",
                "mean", "std", "num_classes", "license", "label_names")
        return {k: cfg[k] for k in keys if k in cfg}, f"registry entry {cfg['name']}"
    raise InvalidInputError(
        f"No pretrained config for {timm_name!r}: no --pretrained-cfg, no config.json next to the checkpoint "
        f"and no registry entry with source.model == {timm_name!r}. Pass --pretrained-cfg (timm's "
        f"config.json, or a JSON object with mean, std, input_size, crop_pct, interpolation, num_classes).")


def verify_against_timm(timm_name: str, state: dict, model, input_size: int = 96, seed: int = 0) -> dict:
    """Max relative logit error of ``model`` against timm's model on a random batch.

    Args:
        timm_name: the timm model name (architecture and tag).
        state: the checkpoint's state dict (NumPy arrays).
        model: our converted model.
        input_size: side of the random ``(2, input_size, input_size, 3)`` batch.
        seed: NumPy seed of the batch.

    Returns:
        ``{"max_relative_error": max|ours - timm| / max|timm|, "input_shape", "timm_version",
        "torch_version"}``.

    Raises:
        TimmReferenceError: timm or PyTorch is not installed.
    """
    timm, torch = _timm()
    arch = split_timm_name(timm_name)[0]
    weight = classifier_keys(our_architecture(timm_name))[0]
    num_classes = int(state[weight].shape[0]) if weight in state else 0
    reference = timm.create_model(arch, pretrained=False, num_classes=num_classes).eval()
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    x = np.random.default_rng(seed).standard_normal((2, 3, input_size, input_size)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    actual = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    error = float(np.abs(actual - expected).max() / np.abs(expected).max())
    return {"max_relative_error": error, "input_shape": [2, input_size, input_size, 3],
            "timm_version": timm.__version__, "torch_version": torch.__version__}


def convert_checkpoint(output, *, checkpoint=None, hub_repo: str | None = None, timm_name: str | None = None,
                       revision: str | None = None, repo_id: str | None = None, pretrained_cfg=None,
                       input_shape=None, verify: bool = False, overwrite: bool = False) -> tuple[Path, dict]:
    """Converts a timm checkpoint into Keras's unzipped model folder with our pretrained config.

    Args:
        output: the folder to write.
        checkpoint: a local timm ``model.safetensors`` (or ``hub_repo``).
        hub_repo: a Hub repo (``"timm/seresnet50.a1_in1k"``), downloaded through the Hugging
            Face cache (``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` honoured).
        timm_name: timm model name with tag (default with ``hub_repo``: the repo's name).
        revision: Hub revision to download (and record).
        repo_id: with ``checkpoint``: the repo it came from (recorded; default ``timm/<name>``).
        pretrained_cfg: a JSON file with the pretrained config (timm's ``config.json``);
            default: the Hub's or the checkpoint's ``config.json``, else our registry entry.
        input_shape: ``(H, W)`` fixed input size (default: any size).
        verify: compare logits with timm's own model (needs timm and PyTorch); an error
            above :data:`~keras_attention.convert.timm.PARITY_RTOL` fails.
        overwrite: replace an existing ``output``.

    Returns:
        ``(folder, metadata)``: the folder and its ``metadata.json`` content.

    Raises:
        InvalidInputError: unsupported architecture, unreadable or incomplete pretrained
            config, a classifier width that disagrees with it, or a failed verification.
        MissingFileError: no checkpoint file. ConversionError: the checkpoint does not fit.
        WeightsNotFoundError: the Hub checkpoint cannot be fetched (offline, ...).
        FolderExistsError: ``output`` exists and ``overwrite`` is false.
    """
    if (checkpoint is None) == (hub_repo is None):
        raise InvalidInputError("Give exactly one of a checkpoint file (--checkpoint) or a Hub repo (--hub-repo).")
    hub_config = None
    if hub_repo:
        checkpoint, hub_config, revision = _from_hub(hub_repo, revision)
        repo_id = hub_repo
        timm_name = timm_name or hub_repo.split("/", 1)[-1]
    else:
        if not timm_name:
            raise InvalidInputError("--timm-name is required with --checkpoint (e.g. seresnet50.a1_in1k).")
        if not os.path.isfile(checkpoint):
            raise MissingFileError(f"No checkpoint file at {str(checkpoint)!r}.")
        if repo_id is None and "." in timm_name:
            repo_id = f"timm/{timm_name}"
    arch = our_architecture(timm_name)
    cfg, cfg_origin = _pretrained_cfg(timm_name, pretrained_cfg=pretrained_cfg, hub_config=hub_config,
                                      checkpoint=None if hub_repo else checkpoint)
    missing = [k for k in REQUIRED_CFG if k not in cfg]
    if missing:
        raise InvalidInputError(f"The pretrained config ({cfg_origin}) lacks {missing}.")
    state = load_state_dict(checkpoint)
    shape = (None, None, 3) if input_shape is None else (*input_shape, 3)
    model = create_model_from_timm(timm_name, state, input_shape=shape)
    model_kwargs = {**infer_model_kwargs(timm_name, state), "input_shape": list(shape)}
    if "num_classes" in cfg and cfg["num_classes"] != model_kwargs.get("num_classes"):
        raise InvalidInputError(f"The pretrained config ({cfg_origin}) says num_classes={cfg['num_classes']} but "
                                f"the checkpoint's classifier has {model_kwargs.get('num_classes')} outputs.")
    verification = verify_against_timm(timm_name, state, model) if verify else None
    if verification is not None and verification["max_relative_error"] > PARITY_RTOL:
        raise InvalidInputError(f"Verification against timm failed: max relative logit error "
                                f"{verification['max_relative_error']:.3g} > {PARITY_RTOL:g}.")
    tag = split_timm_name(timm_name)[1]
    # The folder's pretrained_cfg has the registry entry's shape, so keras_attention.load(folder or
    # hf://...) can rebuild the architecture (and change the head) from it.
    folder_cfg = pretrained_entry(
        architecture=arch, tag=tag, fmt="keras", model_kwargs=model_kwargs, input_size=cfg["input_size"],
        crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"],
        num_classes=cfg.get("num_classes", model_kwargs.get("num_classes")), label_names=cfg.get("label_names"),
        license=cfg.get("license"),
        source={"format": "timm", "model": timm_name, "repo_id": repo_id, "revision": revision,
                "file": CHECKPOINT_FILE, "sha256": sha256_file(checkpoint), "size": os.path.getsize(checkpoint)},
        validate=False, **{k: cfg[k] for k in _EXTRA_CFG if k in cfg},
        **({"related_papers": related_papers_for(arch)} if related_papers_for(arch) else {}))
    conversion = {"converter": "keras_attention.convert.timm", "pretrained_cfg_from": cfg_origin,
                  "tensors": len(state), "verification": verification}
    folder = save_hub_folder(model, folder_cfg, output, model_card=False, metadata={"conversion": conversion},
                             overwrite=overwrite)
    return folder, json.loads((folder / "metadata.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------
# timm's pretrained configs -> registry entries
# --------------------------------------------------------------------------------------

def timm_registry_entry(timm_name: str, cfg: dict, model_kwargs: dict, default: bool, timm_version: str) -> dict:
    """The registry entry (format ``"timm"``) of one timm checkpoint.

    Args:
        timm_name: ``"seresnet50.a1_in1k"``.
        cfg: timm's ``PretrainedCfg.to_dict()`` of it.
        model_kwargs: our builder arguments that fit its state dict (:func:`infer_model_kwargs`).
        default: whether it is the architecture's default tag.
        timm_version: the timm version the config was read from (recorded).

    Returns:
        The entry; ``hub.revision`` and the file's ``sha256``/``size`` are null until pinned.
    """
    arch = our_architecture(timm_name)
    tag = timm_name.split(".", 1)[1]
    ours = pretrained_cfg_from_timm(cfg)
    pretraining = next((v for k, v in PRETRAINING.items() if tag.startswith(k)), None)
    notes = ("Converted at load time from timm's model.safetensors by keras_attention.convert "
             f"(logits match timm's model to < {PARITY_RTOL:g} relative error on random weights: "
             "tests/convert/test_timm.py). hub.revision and files.sha256/size are null because "
             f"the Hub could not be reached when this entry was written (from timm {timm_version}'s "
             "registry, offline); run `keras-attention convert --write-registry weights --pin` "
             "online to pin them. metrics are timm's to report; not measured here.")
    if pretraining:
        notes += f" Pretrained on {pretraining}, fine-tuned on ImageNet-1k."
    extra = {k: ours[k] for k in ("test_input_size", "test_crop_pct", "crop_mode") if k in ours}
    if related_papers_for(arch):
        extra["related_papers"] = related_papers_for(arch)
    return pretrained_entry(
        architecture=arch, tag=tag, default=default, fmt="timm",
        files={CHECKPOINT_FILE: {"sha256": None, "size": None}}, repo_id=cfg["hf_hub_id"], revision=None,
        model_kwargs={**model_kwargs, "input_shape": ours["input_size"]}, input_size=ours["input_size"],
        crop_pct=ours["crop_pct"], interpolation=ours["interpolation"], mean=ours["mean"], std=ours["std"],
        num_classes=ours["num_classes"], labels_file=LABELS_FILE, license=ours.get("license", "unknown"),
        dataset="imagenet-1k",
        metrics={"top1": None, "top5": None, "split": "validation", "dataset": "imagenet-1k", "command": None},
        source={"repo_id": cfg["hf_hub_id"], "model": timm_name, "timm_version": timm_version,
                **{k: ours[k] for k in ("origin_url", "paper_ids") if k in ours},
                **({"url": cfg["url"]} if cfg.get("url") else {})},
        notes=notes, **extra)


def dump_json(obj) -> str:
    """``json.dumps(indent=2)`` with lists of numbers/strings kept on one line (the ``json``
    module has no such option; the entries stay readable and their diffs small)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def pin_entry(entry: dict) -> None:
    """Fills ``hub.revision`` and the files' ``sha256``/``size`` from the Hub (needs the network).

    Raises:
        WeightsError: the repo cannot be read from the Hub.
    """
    repo_id = entry["hub"]["repo_id"]
    try:
        info = huggingface_hub.HfApi().model_info(repo_id, files_metadata=True)
    except (HfHubHTTPError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise WeightsError(f"--pin: cannot read {repo_id} from the Hub: {type(err).__name__}: {first}") from None
    entry["hub"]["revision"] = info.sha
    for sibling in info.siblings or []:
        if sibling.rfilename in entry["files"] and sibling.lfs is not None:
            entry["files"][sibling.rfilename] = {"sha256": sibling.lfs.sha256, "size": sibling.size}


def write_timm_registry(out, *, only: str | None = None, pin: bool = False, log=print) -> list[str]:
    """Writes ``<out>/<arch>.<tag>/pretrained.json`` for every timm checkpoint we convert.

    Entries of our own weights are left alone; an earlier pin (revision and hashes) is kept.

    Args:
        out: the registry folder (``weights``).
        only: a regular expression on timm names to include.
        pin: read each repo's commit and file hashes from the Hub (:func:`pin_entry`).
        log: where progress lines go.

    Returns:
        The names written.

    Raises:
        TimmReferenceError: timm is not installed (its configs are the source).
        WeightsError: ``pin`` and a repo cannot be read.
    """
    timm, _ = _timm()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in out.glob(f"*/{PRETRAINED_FILENAME}")}
    ours_default = {e["architecture"] for e in existing.values() if e.get("format") != "timm" and e.get("default")}
    pattern = re.compile(only) if only else None
    written = []
    for timm_arch, arch in sorted(TIMM_ARCHITECTURES.items()):
        names = [n for n in timm.list_pretrained(f"{timm_arch}.*") if n.split(".")[0] == timm_arch]
        names = [n for n in names if pattern is None or pattern.search(n)]
        if not names:
            continue
        reference = timm.create_model(timm_arch, pretrained=False)
        shapes = {k: np.zeros(v.shape, dtype="float32") for k, v in reference.state_dict().items()
                  if k.endswith("se.fc1.weight") or k == classifier_keys(arch)[0]}
        kwargs = infer_model_kwargs(timm_arch, shapes)
        default_tag = timm.models.get_pretrained_cfg(timm_arch).tag
        for timm_name in names:
            cfg = timm.models.get_pretrained_cfg(timm_name).to_dict()
            if cfg.get("num_classes") != 1000 or not cfg.get("hf_hub_id"):
                log(f"skip {timm_name}: num_classes={cfg.get('num_classes')}, hf_hub_id={cfg.get('hf_hub_id')}")
                continue
            entry = timm_registry_entry(timm_name, cfg, kwargs, default=(cfg["tag"] == default_tag
                                                                         and arch not in ours_default),
                                        timm_version=timm.__version__)
            old = existing.get(entry["name"])
            if old is not None and old.get("format") != "timm":
                log(f"skip {entry['name']}: an entry of format {old.get('format')!r} exists")
                continue
            if old is not None and old.get("hub", {}).get("revision"):
                entry["hub"]["revision"] = old["hub"]["revision"]  # keep a pin made earlier
                entry["files"] = old["files"]
            if pin:
                pin_entry(entry)
            atomic_write_text(out / entry["name"] / PRETRAINED_FILENAME, dump_json(entry) + "\n")
            written.append(entry["name"])
    log(f"wrote {len(written)} entries under {out}")
    return written
