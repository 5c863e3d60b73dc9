"""``keras-attention convert``, ``publish`` and ``add-weights``: the maintainers' weights commands.

- ``convert``: a timm checkpoint (local file or Hub repo) -> a Keras model folder, or
  ``--write-registry weights [--pin]``: timm's configs -> ``weights/<arch>.<tag>/pretrained.json``
  (:mod:`keras_attention.convert.timm_tools`);
- ``publish``: a registry tag -> its Hub folder (``--dry-run``) or an upload whose commit is
  printed and, with ``--update-registry``, pinned (:mod:`keras_attention.weights`);
- ``add-weights``: finished training runs -> registry entries with model cards.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import constants

from keras_attention import weights
from keras_attention._errors import InvalidInputError, MissingFileError
from keras_attention.cli import add_common_arguments
from keras_attention.convert import timm_tools


def _add_convert_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "convert", help="convert a timm checkpoint, or write timm registry entries",
        description="Convert a timm ResNet-family checkpoint (a local model.safetensors or a Hub "
                    "repo) into a Keras model folder (config.json, model.weights.h5, metadata.json "
                    "with the pretrained config), or write the registry entries of timm's "
                    "checkpoints (--write-registry; needs timm)."))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="local timm model.safetensors")
    source.add_argument("--hub-repo", help="Hub repo id, e.g. timm/seresnet50.a1_in1k (Hugging Face cache; "
                                           "honours HF_HUB_OFFLINE, HF_ENDPOINT)")
    source.add_argument("--write-registry", metavar="DIR",
                        help="write DIR/<arch>.<tag>/pretrained.json for timm's checkpoints (needs timm)")
    p.add_argument("--timm-name", help="timm model name with tag, e.g. seresnet50.a1_in1k "
                                       "(default with --hub-repo: the repo name)")
    p.add_argument("--revision", help="Hub revision (commit) to download / record")
    p.add_argument("--repo-id", help="with --checkpoint: the Hub repo it came from (recorded)")
    p.add_argument("--pretrained-cfg", help="JSON file with the pretrained config (timm's config.json)")
    p.add_argument("--output", help="output folder (Keras unzipped model layout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--input-shape", type=int, nargs=2, metavar=("H", "W"),
                   help="fixed model input size (default: any size)")
    p.add_argument("--verify", action="store_true",
                   help="compare logits with timm's model on a random batch (needs timm + torch)")
    p.add_argument("--pin", action="store_true",
                   help="with --write-registry: read revision/sha256/size from the Hub (online)")
    p.add_argument("--only", help="with --write-registry: regex on timm names to include")
    return p


def cmd_convert(args) -> int:
    if args.write_registry:
        timm_tools.write_timm_registry(args.write_registry, only=args.only, pin=args.pin)
        return 0
    if not args.output:
        raise InvalidInputError("--output is required to convert a checkpoint.")
    folder, meta = timm_tools.convert_checkpoint(
        args.output, checkpoint=args.checkpoint, hub_repo=args.hub_repo, timm_name=args.timm_name,
        revision=args.revision, repo_id=args.repo_id, pretrained_cfg=args.pretrained_cfg,
        input_shape=args.input_shape, verify=args.verify, overwrite=args.overwrite)
    verification = meta["conversion"]["verification"]
    if verification is not None:
        print(f"verified against timm: max relative logit error {verification['max_relative_error']:.3g}")
    cfg = meta["pretrained_cfg"]
    print(f"wrote {folder} ({cfg['architecture']}, from {cfg['source']['model']})")
    return 0


def _add_publish_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "publish", help="publish a registry tag's weights to the Hugging Face Hub",
        description="Build the Hub folder of a registry tag (Keras's unzipped layout plus a model "
                    "card), create the repo if needed, upload, and print the commit to pin in its "
                    "pretrained.json (written there with --update-registry). Authentication and "
                    "endpoint follow huggingface_hub (HF_TOKEN or `hf auth login`, HF_ENDPOINT)."))
    p.add_argument("name", help="registry tag, e.g. se_resnet20.cifar10")
    p.add_argument("--repo-id", help="Hub repo 'org/name' (default: the entry's hub.repo_id)")
    p.add_argument("--dry-run", action="store_true", help="only write the folder (see --out); no upload")
    p.add_argument("--out", type=Path, help="folder to write (default with --dry-run: hub/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--message", help="commit message")
    p.add_argument("--update-registry", action="store_true",
                   help="write the new commit (and --repo-id) into the entry's pretrained.json")
    return p


def cmd_publish(args) -> int:
    entry = weights.find_pretrained(args.name)
    repo_id = args.repo_id or entry.cfg["hub"]["repo_id"]
    if args.dry_run:
        folder = weights.build_hub_folder(entry.name, args.out or Path("hub") / entry.name, repo_id=repo_id,
                                          overwrite=args.overwrite)
        print(f"Wrote the Hub folder of {entry.name} for {repo_id} to {folder}:")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            print(f"  {path.relative_to(folder).as_posix():20s} {path.stat().st_size:>12,d} B  "
                  f"sha256 {weights.sha256_file(path)}")
        print("Nothing was uploaded (--dry-run).")
        return 0
    if args.out:
        folder = weights.build_hub_folder(entry.name, args.out, repo_id=repo_id, overwrite=args.overwrite)
        commit = weights.upload_hub_folder(folder, repo_id, private=args.private or None,
                                           commit_message=args.message)
        if args.update_registry:
            weights.update_registry_revision(entry.name, commit, repo_id)
    else:
        commit = weights.publish(entry.name, repo_id=repo_id, private=args.private or None,
                                 commit_message=args.message, update_registry=args.update_registry)
    print(f"Published {entry.name} to {constants.ENDPOINT}/{repo_id} at commit {commit}")
    pin = json.dumps({"repo_id": repo_id, "revision": commit})
    if args.update_registry:
        print(f"Pinned in {entry.path}: \"hub\": {pin}")
    else:
        print(f"Pin it in {entry.path}: \"hub\": {pin} (or rerun with --update-registry)")
    print(commit)
    return 0


def _add_add_weights_parser(sub):
    p = add_common_arguments(sub.add_parser(
        "add-weights", help="add finished training runs to the weights registry",
        description="Add finished training runs to the weights registry as <weights-dir>/<arch>.<tag>/ "
                    "(weights, pretrained.json, a model card). Then evaluate the entry with the "
                    "command in its card and check the numbers agree."))
    p.add_argument("runs", nargs="+", type=Path, help="training output folders")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="registry folder (default: the source checkout's weights/, else the first "
                        "folder on KERAS_ATTENTION_WEIGHTS_PATH)")
    p.add_argument("--notes-file", type=Path, help="markdown added to every card under 'Notes'")
    p.add_argument("--overwrite", action="store_true", help="replace existing entries")
    p.add_argument("--label-descriptions", type=Path, default=None,
                   help="JSON {label: readable name} (or a label hierarchy with 'names', such as "
                        "keras_attention/data/hierarchies/imagewoof.json) stored with the entry and shown "
                        "by predict")
    return p


def cmd_add_weights(args) -> int:
    notes = None
    if args.notes_file:
        if not args.notes_file.is_file():
            raise MissingFileError(f"--notes-file {str(args.notes_file)!r} does not exist.")
        notes = args.notes_file.read_text(encoding="utf-8")
    descriptions = weights.read_label_descriptions(args.label_descriptions) if args.label_descriptions else None
    for run in args.runs:
        print(weights.add_trained_weights(run, args.weights_dir, notes=notes, overwrite=args.overwrite,
                                          label_descriptions=descriptions))
    return 0


def register(sub) -> None:
    _add_convert_parser(sub).set_defaults(func=cmd_convert)
    _add_publish_parser(sub).set_defaults(func=cmd_publish)
    _add_add_weights_parser(sub).set_defaults(func=cmd_add_weights)
