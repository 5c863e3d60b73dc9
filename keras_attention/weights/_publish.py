"""Publishing: model cards, the Hub folder, upload to the Hub, pinning the commit in the registry.

The Hub folder is Keras's unzipped model layout plus a model card:

    config.json        the model's Keras config (``keras.saving.save_model(..., zipped=False)``)
    model.weights.h5   the registry's file byte for byte (same SHA-256), or saved from the model
    metadata.json      Keras's keras_version/date_saved, our versions and ``pretrained_cfg``
    README.md          the model card (front matter and model-index by ``huggingface_hub``)

:func:`save_hub_folder` is the one writer of that folder (``keras-attention publish`` and
``keras-attention convert`` use it); :func:`publish` uploads it and returns the commit to
pin, which :func:`update_registry_revision` writes into the entry.
"""

from __future__ import annotations

import copy
import json
import platform
import tempfile
from pathlib import Path

import huggingface_hub
import keras
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError

from keras_attention._files import atomic_folder, atomic_write_text, copy_file, sha256_file, write_json
from keras_attention._version import __version__
from keras_attention.weights._builder import load
from keras_attention.weights._download import hash_for_etag, resolve_file
from keras_attention.weights._registry import (COMMIT_RE, KERAS_WEIGHTS_FILENAME, LIBRARY_NAME,
                                               PRETRAINED_FILENAME, ChecksumError, FolderExistsError,
                                               RegistryError, WeightsError, entry_cfg, find_pretrained,
                                               validate_pretrained_cfg)


class PublishError(WeightsError, ValueError):
    """The Hub refused an upload (invalid card metadata, no write access, ...)."""


# --------------------------------------------------------------------------------------
# Model cards
# --------------------------------------------------------------------------------------

def card_data(cfg: dict) -> ModelCardData:
    """The card's metadata: library, license, tags, datasets and the measured top-1/top-5.

    Args:
        cfg: a registry entry (``pretrained.json``).

    Returns:
        ``huggingface_hub.ModelCardData`` whose ``eval_results`` (the model-index) hold the
        top-1 and top-5 accuracy in percent where measured.
    """
    metrics = cfg.get("metrics") or {}
    dataset = metrics.get("dataset") or cfg["dataset"]
    results = [EvalResult(task_type="image-classification", task_name="Image Classification",
                          dataset_type=dataset, dataset_name=dataset, dataset_split=metrics.get("split") or "test",
                          metric_type=kind, metric_value=float(metrics[key]), metric_name=label)
               for key, kind, label in (("top1", "accuracy", "Top-1 accuracy (%)"),
                                        ("top5", "top_5_accuracy", "Top-5 accuracy (%)"))
               if metrics.get(key) is not None]
    return ModelCardData(library_name="keras", license=cfg["license"], pipeline_tag="image-classification",
                         tags=["image-classification", "keras", "keras-attention", cfg["architecture"]],
                         datasets=[cfg["dataset"]], metrics=["accuracy"],
                         model_name=cfg["name"] if results else None, eval_results=results or None)


def _number(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def build_model_card(cfg: dict, repo_id: str, body: str | None = None) -> str:
    """The Hub ``README.md``: metadata, the card body, preprocessing and a usage snippet.

    Args:
        cfg: the registry entry.
        repo_id: the Hub repo the card is for (used in the usage snippet).
        body: the weights folder's own model card (its front matter is dropped); a short
            description is generated without one.

    Returns:
        The card's text (``huggingface_hub.ModelCard``), front matter included.
    """
    metrics = cfg.get("metrics") or {}
    paper = cfg.get("paper")
    paper_text = paper if isinstance(paper, str) else ", ".join(
        str(paper[k]) for k in ("title", "url", "arxiv") if paper.get(k))
    if body:
        text = ModelCard(body).text.strip() + "\n" if body.startswith("---") else body.strip() + "\n"
    else:
        text = (f"# {cfg['name']}\n\n`{cfg['architecture']}` trained on `{cfg['dataset']}` "
                f"([keras-attention](https://github.com/) model zoo).\n")
    table = (f"\n## Evaluation\n\n| top-1 (%) | top-5 (%) | split | command |\n|---|---|---|---|\n"
             f"| {_number(metrics.get('top1'))} | {_number(metrics.get('top5'))} | "
             f"{metrics.get('split') or 'n/a'} | `{metrics.get('command') or 'n/a'}` |\n"
             ) if "## Evaluation" not in text else ""
    details = (f"\n## Preprocessing\n\n- input size: {cfg['input_size']} (H, W, C); crop fraction "
               f"{cfg['crop_pct']}; interpolation {cfg['interpolation']}\n- images scaled to [0, 1], then "
               f"normalised with mean {cfg['mean']} and std {cfg['std']}\n- {cfg['num_classes']} classes\n"
               f"- paper: {paper_text}\n- license: {cfg['license']}\n")
    usage = (f"\n## Usage\n\n```python\nimport keras_attention\n\n"
             f"model = keras_attention.load(\"hf://{repo_id}\")          # this folder\n"
             f"model = keras_attention.load(\"{cfg['name']}\")  # same weights via the registry (pinned commit)\n"
             f"model = keras_attention.load(\"{cfg['name']}\", num_classes=5)  # new head for fine-tuning\n\n"
             f"import keras\n"
             f"model = keras.saving.load_model(\"hf://{repo_id}\")  # after `import keras_attention`\n"
             f"```\n")
    card = ModelCard(f"---\n{card_data(cfg).to_yaml()}\n---\n\n{text}{table}{details}{usage}")
    return str(card)


# --------------------------------------------------------------------------------------
# The Hub folder
# --------------------------------------------------------------------------------------

def _versions() -> dict:
    return {"keras_attention_version": __version__, "keras_version": keras.__version__,
            "backend": keras.backend.backend(), "python_version": platform.python_version(),
            "huggingface_hub_version": huggingface_hub.__version__}


def save_hub_folder(model: keras.Model, cfg: dict, out_dir, *, repo_id: str | None = None,
                    weights_file=None, card_body: str | None = None, model_card: bool = True,
                    metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Writes ``model`` as a Hub folder: Keras's unzipped layout plus (optionally) a model card.

    Args:
        model: the model to save (its Keras config goes to ``config.json``).
        cfg: its pretrained config (a registry entry, or the partial config of a converted
            checkpoint); copied into ``metadata.json`` as ``pretrained_cfg`` with ``files``
            set to the written weights' SHA-256 and size and ``format`` ``"keras"``.
        out_dir: the folder to write.
        repo_id: the Hub repo it is meant for (default ``cfg["hub"]["repo_id"]``; if neither,
            no ``hub`` field is written).
        weights_file: a ``model.weights.h5`` to copy byte for byte (so its SHA-256 stays the
            registry's); default: saved from ``model``.
        card_body: the weights folder's own model card.
        model_card: write ``README.md`` (:func:`build_model_card`; needs a complete entry).
        metadata: further ``metadata.json`` keys (e.g. a conversion record).
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir`` as a ``Path``. The folder is written next to it and renamed into place
        when complete; an existing one is replaced only then.

    Raises:
        FolderExistsError: ``out_dir`` exists (and is not empty) and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FolderExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it.")
    with atomic_folder(out_dir) as tmp:
        keras.saving.save_model(model, str(tmp), zipped=False)
        assets = tmp / "assets"
        if assets.is_dir() and not any(assets.iterdir()):
            assets.rmdir()  # Keras leaves an empty assets/ folder; the Hub cannot hold one
        weights = tmp / KERAS_WEIGHTS_FILENAME
        if weights_file is not None:
            copy_file(weights_file, weights)
        cfg = copy.deepcopy(cfg)
        repo_id = repo_id or (cfg.get("hub") or {}).get("repo_id")
        cfg["files"] = {KERAS_WEIGHTS_FILENAME: {"sha256": sha256_file(weights), "size": weights.stat().st_size}}
        cfg["format"] = "keras"
        if repo_id:
            # A file cannot hold the hash of the commit that contains it: the registry pins it.
            cfg["hub"] = {"repo_id": repo_id, "revision": None}
        meta = json.loads((tmp / "metadata.json").read_text(encoding="utf-8"))
        meta.update(_versions())
        meta.update(metadata or {})
        meta["pretrained_cfg"] = cfg
        write_json(tmp / "metadata.json", meta)
        if model_card:
            atomic_write_text(tmp / "README.md", build_model_card(cfg, repo_id, card_body))
    return out_dir


def build_hub_folder(name: str, out_dir, *, repo_id: str | None = None, overwrite: bool = False) -> Path:
    """The Hub folder of registry tag ``name`` (weights resolved and verified as for ``load``).

    Args:
        name: registry tag (``"se_resnet20.cifar10"``).
        out_dir: the folder to write.
        repo_id: the Hub repo (default: the entry's ``hub.repo_id``).
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir`` as a ``Path`` (see :func:`save_hub_folder`).
    """
    entry = find_pretrained(name)
    cfg = entry_cfg(entry)
    model = load(entry.name)
    weights_file = resolve_file(entry, KERAS_WEIGHTS_FILENAME) if cfg["format"] == "keras" else None
    card = entry.folder / "README.md"
    return save_hub_folder(model, cfg, out_dir, repo_id=repo_id or cfg["hub"]["repo_id"],
                           weights_file=weights_file,
                           card_body=card.read_text(encoding="utf-8") if card.is_file() else None,
                           overwrite=overwrite)


# --------------------------------------------------------------------------------------
# Upload and pinning
# --------------------------------------------------------------------------------------

def upload_hub_folder(folder, repo_id: str, *, private: bool | None = None, token=None,
                      commit_message: str | None = None) -> str:
    """``create_repo(exist_ok=True)`` + ``upload_folder``; returns the 40-hex commit.

    After the upload, the Hub's ETag of every file is compared with the local file
    (SHA-256 for LFS files, git blob SHA-1 for regular files).

    Args:
        folder: the Hub folder (:func:`save_hub_folder`).
        repo_id: ``"org/name"``.
        private: create the repo as private.
        token: Hub token (default: ``HF_TOKEN`` or ``hf auth login``).
        commit_message: the commit's message.

    Returns:
        The commit hash of the upload.

    Raises:
        PublishError: the Hub refused the repo or the upload (e.g. invalid card metadata).
        ChecksumError: a file on the Hub differs from the local one.
    """
    folder = Path(folder)
    api = huggingface_hub.HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                 commit_message=commit_message or f"Upload {folder.name} with keras-attention")
    except (ValueError, HfHubHTTPError) as e:
        raise PublishError(f"Publishing {folder} to {repo_id} failed: {e}") from e
    commit = info.oid
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        url = huggingface_hub.hf_hub_url(repo_id, path.relative_to(folder).as_posix(), revision=commit)
        etag = huggingface_hub.get_hf_file_metadata(url, token=token).etag
        algo, actual = hash_for_etag(path, etag)
        if actual != etag:
            raise ChecksumError(f"{path.name} on the Hub ({repo_id}@{commit}) has {algo} {etag}, the local "
                                f"file has {actual}.")
    return commit


def update_registry_revision(name: str, revision: str, repo_id: str | None = None) -> Path:
    """Pins ``hub.revision`` (and ``hub.repo_id``) in the entry's ``pretrained.json`` (atomic write).

    Args:
        name: registry tag.
        revision: the 40-hex commit to pin.
        repo_id: a new ``hub.repo_id``, if it changed.

    Returns:
        The path of the rewritten ``pretrained.json``.

    Raises:
        RegistryError: ``revision`` is not a commit hash, or the result breaks the schema.
    """
    if not COMMIT_RE.match(revision):
        raise RegistryError(f"revision must be a 40-hex commit hash, received {revision!r}")
    entry = find_pretrained(name)
    path = entry.folder / PRETRAINED_FILENAME
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["hub"]["revision"] = revision
    if repo_id:
        cfg["hub"]["repo_id"] = repo_id
    validate_pretrained_cfg(cfg, str(path))
    write_json(path, cfg)
    return path


def publish(name: str, *, repo_id: str | None = None, private: bool | None = None, token=None,
            commit_message: str | None = None, update_registry: bool = False, work_dir=None) -> str:
    """Builds the Hub folder of ``name``, uploads it, returns the commit hash to pin.

    Args:
        name: registry tag (``"se_resnet20.cifar10"``).
        repo_id: Hub repo (default: the entry's ``hub.repo_id``).
        private: create the repo as private.
        token: Hub token (default: ``HF_TOKEN`` or ``hf auth login``).
        commit_message: the commit's message.
        update_registry: write the commit (and repo) into the entry's ``pretrained.json``.
        work_dir: where to build the folder (default: a temporary folder).

    Returns:
        The 40-hex commit.

    Raises:
        PublishError, ChecksumError: see :func:`upload_hub_folder`.
    """
    entry = find_pretrained(name)
    repo_id = repo_id or entry.cfg["hub"]["repo_id"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_hub_folder(entry.name, Path(work_dir or tmp) / entry.name, repo_id=repo_id,
                                  overwrite=True)
        commit = upload_hub_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)
    if update_registry:
        update_registry_revision(entry.name, commit, repo_id)
    return commit
