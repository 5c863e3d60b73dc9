#!/usr/bin/env python3
"""Publish a pretrained tag's weights to the Hugging Face Hub.

Builds the Hub folder of a registry tag (Keras's unzipped layout: config.json,
model.weights.h5, metadata.json, plus a model card README.md with YAML front matter),
then creates the repo if needed, uploads the folder and prints the commit hash to pin
in weights/<arch>.<tag>/pretrained.json (written there with --update-registry).

    python3 scripts/publish.py se_resnet20.cifar10 --dry-run --out build/hub
    HF_TOKEN=... python3 scripts/publish.py se_resnet20.cifar10 --update-registry

Authentication, endpoint and cache follow huggingface_hub (HF_TOKEN or `hf auth login`,
HF_ENDPOINT). The logic lives in keras_attention.hub; this is a thin wrapper.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import keras_attention  # noqa: F401
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="registry tag, e.g. se_resnet20.cifar10")
    parser.add_argument("--repo-id", help="Hub repo 'org/name' (default: the entry's hub.repo_id)")
    parser.add_argument("--dry-run", action="store_true", help="only write the folder (see --out); no upload")
    parser.add_argument("--out", type=Path, help="folder to write (default with --dry-run: hub/<name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--update-registry", action="store_true",
                        help="write the new commit (and --repo-id) into the entry's pretrained.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from keras_attention import hub

    entry = hub.find_pretrained(args.name)
    repo_id = args.repo_id or entry.cfg["hub"]["repo_id"]
    if args.dry_run:
        out = args.out or Path("hub") / entry.name
        folder = hub.build_hub_folder(entry.name, out, repo_id=repo_id, overwrite=args.overwrite)
        print(f"Wrote the Hub folder of {entry.name} for {repo_id} to {folder}:")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            print(f"  {path.relative_to(folder).as_posix():20s} {path.stat().st_size:>12,d} B  "
                  f"sha256 {hub.sha256_file(path)}")
        print("Nothing was uploaded (--dry-run).")
        return 0
    if args.out:
        folder = hub.build_hub_folder(entry.name, args.out, repo_id=repo_id, overwrite=args.overwrite)
        commit = hub.upload_hub_folder(folder, repo_id, private=args.private or None,
                                       commit_message=args.message)
        if args.update_registry:
            hub.update_registry_revision(entry.name, commit, repo_id)
    else:
        commit = hub.publish(entry.name, repo_id=repo_id, private=args.private or None,
                             commit_message=args.message, update_registry=args.update_registry)
    from huggingface_hub import constants
    print(f"Published {entry.name} to {constants.ENDPOINT}/{repo_id} at commit {commit}")
    pin = json.dumps({"repo_id": repo_id, "revision": commit})
    if args.update_registry:
        print(f"Pinned in {entry.folder / hub.PRETRAINED_FILENAME}: \"hub\": {pin}")
    else:
        print(f"Pin it in {entry.folder / hub.PRETRAINED_FILENAME}: \"hub\": {pin} "
              f"(or rerun with --update-registry)")
    print(commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
