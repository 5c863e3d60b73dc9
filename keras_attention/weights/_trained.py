"""Our own trained weights: a training run's ``pretrained.json``, and the run as a registry entry.

:func:`pretrained_config` is what training writes into a run folder; :func:`add_trained_weights`
(``keras-attention add-weights``) turns a finished run into ``weights/<arch>.<tag>/`` with
the weights, the entry and a model card that says how the weights were made.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from keras_attention._errors import InvalidInputError, MissingFileError
from keras_attention._files import atomic_folder, atomic_write_text, copy_file, sha256_file, write_json
from keras_attention.registry import split_model_name
from keras_attention.weights._entry import pretrained_entry
from keras_attention.weights._publish import build_model_card
from keras_attention.weights._registry import (KERAS_WEIGHTS_FILENAME, PRETRAINED_FILENAME, WEIGHTS_PATH_ENV,
                                               ChecksumError, FolderExistsError, package_root,
                                               validate_pretrained_cfg)


def recipe_ref(recipe: str | None) -> str | None:
    """A recipe path as ``weights/README.md`` writes it: relative to ``weights/`` if inside.

    Args:
        recipe: the recipe file a run was made with (``weights/_recipes/cifar10.yaml``).

    Returns:
        ``"_recipes/cifar10.yaml"`` for a recipe under a ``weights`` folder, else ``recipe``.
    """
    if not recipe:
        return None
    parts = Path(recipe).as_posix().split("/")
    if "weights" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("weights") + 1:])
    return recipe


def pretrained_config(cfg, label_names, model_kwargs, weights_path: Path, metrics: dict | None,
                      command: str | None, hardware: str | None) -> dict:
    """The ``pretrained.json`` of a training run (schema in ``weights/README.md``).

    Args:
        cfg: the run's ``keras_attention.training.TrainConfig`` (model, tag, dataset,
            input_size, crop_pct, interpolation, mean, std, val_split, recipe, epochs).
        label_names: class names in output order.
        model_kwargs: the builder arguments the exported model was built with.
        weights_path: the exported ``model.weights.h5`` (hashed into ``files``).
        metrics: the evaluation of the validation split (``top1``, ``top5`` in percent,
            ``per_class_top1``), or ``None`` for a run without one.
        command: the command that made the run.
        hardware: the hardware description.

    Returns:
        The entry, with ``hub.repo_id`` ``keras-attention/<arch>.<tag>`` not yet published.
    """
    arch = split_model_name(cfg.model)[0]
    tag = cfg.tag or re.sub(r"[^A-Za-z0-9_]+", "_", Path(cfg.dataset).name.split(":")[0]).strip("_")
    top = metrics or {}
    weights_path = Path(weights_path)
    # A folder dataset is named by its folder; the command keeps a relative path (such as
    # ../shared/data/imagewoof-160, runnable from the repository) but not an absolute one from
    # the machine that trained (the accelerator's /tmp/...): there the folder's name stands in.
    name = Path(cfg.dataset).name if os.path.isdir(cfg.dataset) else cfg.dataset
    dataset_arg = Path(cfg.dataset).name if os.path.isabs(cfg.dataset) else cfg.dataset
    return pretrained_entry(
        architecture=arch, tag=tag, default=True, fmt="keras",
        files={KERAS_WEIGHTS_FILENAME: {"sha256": sha256_file(weights_path),
                                        "size": weights_path.stat().st_size}},
        repo_id=f"keras-attention/{arch}.{tag}", revision=None, model_kwargs=model_kwargs,
        input_size=cfg.input_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
        mean=cfg.mean, std=cfg.std, label_names=label_names, license="apache-2.0",
        dataset=name,
        metrics={"top1": top.get("top1"), "top5": top.get("top5"), "per_class_top1": top.get("per_class_top1"),
                 "split": cfg.val_split, "dataset": name,
                 "command": f"keras-attention evaluate {arch}.{tag} --dataset {dataset_arg} "
                            f"--split {cfg.val_split}" if cfg.val_split else None},
        source={"recipe": recipe_ref(cfg.recipe), "command": command, "hardware": hardware,
                "epochs": cfg.epochs},
        validate=False)


#: ``--set`` options of a training command that describe the machine it ran on, not the recipe.
_MACHINE_OPTIONS = ("dataset", "data_dir", "output_dir", "verbose", "num_threads", "logical_cpus", "cache")


def portable_train_command(command: str | None, recipe: str, architecture: str, name: str) -> str:
    """The command of a run as a user would type it in the repository, for the model card.

    Keeps the run's own options (``--set epochs=2``, ``--init-from``, ``--resume`` ...) so that
    the card says how the weights were really made, and replaces what belongs to the machine that
    trained: the recipe path becomes ``weights/<recipe>``, ``--output`` and ``init_from`` become
    ``runs/<folder name>``, and ``--set`` of dataset paths, verbosity and threads, and
    ``--progress``, are dropped.

    Args:
        command: the run's command (``pretrained.json`` ``source.command``), or None.
        recipe: the recipe relative to ``weights/`` (``_recipes/imagewoof_tnet.yaml``).
        architecture, name: the entry's architecture and ``arch.tag`` name.

    Returns:
        ``keras-attention train --recipe weights/<recipe> --model <arch> [options] --output runs/<name>``.
    """
    kept = []
    tokens = shlex.split(command or "")[2:]  # after "keras-attention train"
    i = 0
    while i < len(tokens):
        token, value = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else None
        i += 1
        if token in ("--recipe", "--model", "--output", "--progress"):
            i += 1
        elif token == "--init-from" and value is not None:
            kept += [token, f"runs/{Path(value).name}"]
            i += 1
        elif token == "--set" and value is not None:
            key, _, setting = value.partition("=")
            if key == "init_from":
                kept += [token, f"init_from=runs/{Path(setting).name}"]
            elif key not in _MACHINE_OPTIONS:
                kept += [token, value]
            i += 1
        else:
            kept.append(token)
    return shlex.join(["keras-attention", "train", "--recipe", f"weights/{recipe}", "--model", architecture,
                       *kept, "--output", f"runs/{name}"])


def default_weights_dir() -> Path:
    """Where :func:`add_trained_weights` writes by default.

    Returns:
        ``weights/`` of the source checkout the package runs from (``pyproject.toml`` and
        ``weights/`` next to the package, outside any ``site-packages``); else the first
        folder on ``KERAS_ATTENTION_WEIGHTS_PATH``.

    Raises:
        InvalidInputError: neither (an installed package): the folder must be named.
    """
    root = package_root().parent
    installed = {"site-packages", "dist-packages"} & set(root.parts)
    if not installed and (root / "pyproject.toml").is_file() and (root / "weights").is_dir():
        return root / "weights"
    first = next((p for p in os.environ.get(WEIGHTS_PATH_ENV, "").split(os.pathsep) if p), None)
    if first:
        return Path(first).expanduser()
    raise InvalidInputError(
        f"No weights folder to add the run to: keras_attention runs from an installed package "
        f"({package_root()}), not a source checkout. Name the folder (weights_dir=..., "
        f"--weights-dir) or set {WEIGHTS_PATH_ENV}.")


def _card_body(cfg: dict, train_cfg: dict, metrics: dict, notes: str | None) -> str:
    """The model card's body: what was trained, how it was evaluated and made, the hash."""
    source = cfg.get("source") or {}
    m = cfg["metrics"]
    params = metrics.get("trainable_params")
    if m.get("top1") is not None:
        images = metrics.get("num_eval_examples")
        evaluated = (f", evaluated on the full `{m.get('split')}` split"
                     + (f" ({images:,} images)." if images is not None else "."))
        evaluation = ["| top-1 (%) | top-5 (%) | split | command |", "|---|---|---|---|",
                      f"| {m['top1']:.2f} | {_number(m.get('top5'))} | {m.get('split')} | `{m.get('command')}` |"]
    else:
        evaluated = ". The run had no validation split, so it was not evaluated."
        evaluation = ["Not measured: the run had no validation split. Evaluate it with "
                      f"`keras-attention evaluate {cfg['name']} --dataset {cfg['dataset']} --split test`."]
    start = (f"initialised from the run `{Path(train_cfg['init_from']).name}` (`init_from`) and trained"
             if train_cfg.get("init_from") else "trained from scratch")
    lines = [
        f"# {cfg['name']}",
        "",
        f"`{cfg['architecture']}` ({_number(params, ',')} trainable parameters) {start} on "
        f"`{cfg['dataset']}` (`{train_cfg.get('train_split', 'train')}` split) by the keras-attention "
        f"training script{evaluated}",
        "",
        "## Evaluation",
        "",
        *evaluation,
        "",
    ]
    if m.get("per_class_top1"):
        described = dict(zip(cfg["label_names"], cfg.get("label_descriptions") or []))
        lines += ["Top-1 per class (%): " + ", ".join(
            f"{label}{f' ({described[label]})' if label in described else ''} {_number(v, '.1f')}"
            for label, v in m["per_class_top1"].items()) + ".", ""]
    epochs = train_cfg.get("epochs")
    minutes = metrics.get("train_time_s_total")
    lines += [
        "## Training",
        "",
        f"- recipe: `weights/{source.get('recipe')}`; reproduce with `{source.get('command')}`",
        f"- {epochs} epoch{'s' if epochs != 1 else ''} x "
        f"{metrics.get('steps_per_epoch')} steps, batch {train_cfg.get('batch_size')}, "
        f"{_optimizer_text(train_cfg)}, cosine schedule with {train_cfg.get('warmup_epochs')} warmup epoch(s), "
        f"weight decay {train_cfg.get('weight_decay')} ({train_cfg.get('weight_decay_mode')}), label smoothing "
        f"{train_cfg.get('label_smoothing')}, augmentation `{train_cfg.get('augment')}`, seed {train_cfg.get('seed')}",
        f"- precision {metrics.get('precision')}, backend {metrics.get('backend')}, hardware: {source.get('hardware')}",
        f"- training time {_number(None if minutes is None else minutes / 60, '.1f')} min "
        f"({_number(metrics.get('images_per_s_median'), '.0f')} images/s median)",
        f"- final training loss {_number(metrics.get('final_train_loss'), '.4f')}, training top-1 "
        f"{_number(metrics.get('final_train_top1'))}% (with augmentation)",
        "",
        f"Weights file `model.weights.h5`, SHA-256 `{cfg['files'][KERAS_WEIGHTS_FILENAME]['sha256']}`. "
        "Training curves: `curves.png`.",
    ]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def _optimizer_text(train_cfg: dict) -> str:
    """``sgd (lr 0.1, momentum 0.9, nesterov True)`` or ``adamw (lr 0.001, beta_1 0.9, beta_2 0.999)``."""
    name, lr = train_cfg.get("optimizer"), train_cfg.get("lr")
    if name != "sgd":
        return f"{name} (lr {lr}, beta_1 {train_cfg.get('beta_1')}, beta_2 {train_cfg.get('beta_2')})"
    return f"{name} (lr {lr}, momentum {train_cfg.get('momentum')}, nesterov {train_cfg.get('nesterov')})"


def _number(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _read_run_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{path} is not valid JSON: {e}") from None


def read_label_descriptions(path) -> dict[str, str]:
    """A JSON file of human-readable class names: ``{label: description}``, or a label hierarchy
    (:mod:`keras_attention.data.hierarchy` format) whose ``names`` give them (WordNet ids -> words).

    Raises:
        MissingFileError: no such file.
        InvalidInputError: not JSON, or not a mapping of strings to strings.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Label descriptions {str(path)!r} do not exist.")
    values = _read_run_json(path)
    values = values.get("names", values) if isinstance(values, dict) else values
    if not (isinstance(values, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())):
        raise InvalidInputError(f"{path}: expected a JSON object {{label: description}} (or a hierarchy with "
                                f"'names').")
    return values


def add_trained_weights(run_dir, weights_dir=None, *, notes: str | None = None,
                        overwrite: bool = False, label_descriptions: dict[str, str] | None = None) -> Path:
    """Adds a finished training run to the weights registry as ``<weights_dir>/<arch>.<tag>/``.

    Copies ``model.weights.h5`` (its SHA-256 checked against the run's ``pretrained.json``)
    and ``curves.png``, writes ``pretrained.json`` and a model card ``README.md`` (the
    measured metrics, or that none were measured for a run without a validation split; the
    recipe and the command that reproduces the run, hardware, training time, SHA-256, and
    ``notes``). The folder is written under a temporary name and renamed into place; an
    existing entry is replaced only then.

    Args:
        run_dir: the run's output folder.
        weights_dir: the registry folder (default :func:`default_weights_dir`: a source
            checkout's ``weights/``, else ``KERAS_ATTENTION_WEIGHTS_PATH``).
        notes: markdown added to the card under "Notes".
        overwrite: replace an existing entry.
        label_descriptions: human-readable names of the labels (``{"n02086240": "Shih-Tzu"}``,
            :func:`read_label_descriptions`), stored as the entry's ``label_descriptions`` (every
            label must have one) and shown by ``predict`` and the card.

    Returns:
        The entry's folder.

    Raises:
        MissingFileError: the run folder lacks one of its output files.
        ChecksumError: the run's weights do not match its ``pretrained.json``.
        RegistryError: the run's ``pretrained.json`` breaks the schema.
        FolderExistsError: the entry exists and ``overwrite`` is false.
        InvalidInputError: no ``weights_dir`` and no default (installed package), or a label
            without a description.
    """
    run_dir = Path(run_dir)
    weights_dir = Path(weights_dir) if weights_dir else default_weights_dir()
    needed = [PRETRAINED_FILENAME, "metrics.json", "train_config.json", KERAS_WEIGHTS_FILENAME]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if missing:
        raise MissingFileError(f"{run_dir} is not a finished training run: missing {missing}.")
    cfg = _read_run_json(run_dir / PRETRAINED_FILENAME)
    metrics = _read_run_json(run_dir / "metrics.json")
    train_cfg = _read_run_json(run_dir / "train_config.json")
    validate_pretrained_cfg(cfg, str(run_dir / PRETRAINED_FILENAME))
    expected = cfg["files"][KERAS_WEIGHTS_FILENAME]["sha256"]
    actual = sha256_file(run_dir / KERAS_WEIGHTS_FILENAME)
    if actual != expected:
        raise ChecksumError(f"{run_dir / KERAS_WEIGHTS_FILENAME}: SHA-256 {actual}, its pretrained.json says "
                            f"{expected}.")
    if label_descriptions is not None:
        missing = [label for label in cfg["label_names"] if label not in label_descriptions]
        if missing:
            raise InvalidInputError(f"No description for the labels {missing[:5]} ({len(missing)} in all).")
        cfg["label_descriptions"] = [label_descriptions[label] for label in cfg["label_names"]]
    target = weights_dir / cfg["name"]
    if target.exists() and not overwrite:
        raise FolderExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it.")
    # The command in the card must be runnable from the repository, not from the run's machine.
    source = cfg.setdefault("source", {})
    if source.get("recipe") and {"recipes", "_recipes"} & set(Path(source["recipe"]).parts):
        source["recipe"] = f"_recipes/{Path(source['recipe']).name}"  # as shipped in weights/
    if source.get("recipe"):
        source["command"] = portable_train_command(source.get("command"), source["recipe"], cfg["architecture"],
                                                   cfg["name"])
    source["train_time_s"] = metrics.get("train_time_s_total")
    with atomic_folder(target) as tmp:
        tmp.mkdir()
        copy_file(run_dir / KERAS_WEIGHTS_FILENAME, tmp / KERAS_WEIGHTS_FILENAME)
        if (run_dir / "curves.png").is_file():
            copy_file(run_dir / "curves.png", tmp / "curves.png")
        write_json(tmp / PRETRAINED_FILENAME, cfg)
        body = _card_body(cfg, train_cfg, metrics, notes)
        atomic_write_text(tmp / "README.md", build_model_card(cfg, cfg["hub"]["repo_id"], body))
    return target
