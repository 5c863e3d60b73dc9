"""The prepared-dataset format: array-sized datasets as uint8 arrays, read without TensorFlow.

A prepared dataset is a folder::

    dataset.json              manifest: format, version, name, label names, splits, checksums
    <split>.images.npy        uint8 (N, H, W, 3)
    <split>.labels.npy        int64 (N,)

``.npy`` files (NumPy's own format) are memory-mapped when read, so opening CIFAR-10 costs
nothing and a split larger than memory still works. Every file's SHA-256 and size are in
the manifest and checked when a split is opened (a damaged or truncated copy is refused,
naming the file). It is written by ``keras-attention data prepare`` from a TFDS dataset
(needs TensorFlow, once) or from a class folder, atomically (a folder renamed into place
when complete). Meant for datasets that fit as arrays (CIFAR-10/100, resized folders);
large JPEG datasets stay class folders, read directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from keras_attention._errors import InvalidInputError, MissingFileError
from keras_attention._files import atomic_folder, sha256_file, write_json
from keras_attention.data.folder import list_splits, load_folder
from keras_attention.data.source import ImageSource, array_source, parse_split
from keras_attention.data.tfds import load_tfds, tfds_split_names
from keras_attention.data.transforms import eval_view

FORMAT = "keras-attention-prepared-dataset"
VERSION = 1
MANIFEST = "dataset.json"


def is_prepared(path) -> bool:
    """Whether ``path`` is a prepared-dataset folder (has a ``dataset.json`` of this format)."""
    manifest = Path(os.path.expanduser(str(path))) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
    except (json.JSONDecodeError, OSError):
        return False


def write_prepared(output, *, name: str, label_names, splits: dict, source: str,
                   overwrite: bool = False) -> Path:
    """Writes a prepared dataset folder.

    Args:
        output: folder to create (replaced atomically with ``overwrite``).
        name: dataset name recorded in the manifest (``"cifar10"``).
        label_names: class names in label order.
        splits: ``{split: (images, labels)}``: uint8 ``(N, H, W, 3)`` and integer ``(N,)``
            arrays with labels in ``[0, len(label_names))``.
        source: where the data came from (recorded), e.g. ``"tfds cifar10 3.0.2"``.

    Returns:
        The folder.

    Raises:
        InvalidInputError: wrong dtypes, shapes or label range; ``FileExistsError``-like
            refusal when ``output`` exists without ``overwrite``.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise InvalidInputError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    label_names = [str(n) for n in label_names]
    manifest = {"format": FORMAT, "version": VERSION, "name": name, "source": source,
                "label_names": label_names, "splits": {}}
    with atomic_folder(output) as tmp:
        tmp.mkdir()
        for split, (images, labels) in splits.items():
            images = np.asarray(images)
            labels = np.asarray(labels)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise InvalidInputError(f"Split {split!r}: images must be uint8 (N, H, W, 3); "
                                        f"received {images.dtype} {images.shape}.")
            if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
                raise InvalidInputError(f"Split {split!r}: labels must be {len(images)} integers; "
                                        f"received {labels.dtype} {labels.shape}.")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(label_names)):
                raise InvalidInputError(f"Split {split!r}: labels must be in [0, {len(label_names)}); "
                                        f"received [{labels.min()}, {labels.max()}].")
            files = {}
            for kind, array in (("images", images), ("labels", labels.astype(np.int64))):
                filename = f"{split}.{kind}.npy"
                np.save(tmp / filename, array, allow_pickle=False)
                files[filename] = {"sha256": sha256_file(tmp / filename),
                                   "size": (tmp / filename).stat().st_size}
            manifest["splits"][split] = {"num_examples": int(len(images)),
                                         "image_shape": list(images.shape[1:]), "files": files}
        write_json(tmp / MANIFEST, manifest)
    return output


def read_manifest(folder) -> dict:
    """The manifest of a prepared dataset.

    Raises:
        MissingFileError: no ``dataset.json``.
        InvalidInputError: not valid JSON, or not this format / version.
    """
    path = Path(os.path.expanduser(str(folder))) / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{path.parent} is not a prepared dataset: no {MANIFEST}.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{path} is not valid JSON ({err}).") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise InvalidInputError(f"{path}: expected format {FORMAT!r} version {VERSION}; received "
                                f"{manifest.get('format')!r} version {manifest.get('version')!r}.")
    return manifest


def open_prepared(folder, split: str, *, verify: bool = True) -> ImageSource:
    """A split of a prepared dataset (slices allowed: ``"train[:5000]"``) as an ImageSource.

    Args:
        folder: the prepared dataset folder.
        split: split name, optionally with a ``[start:stop]`` slice (counts or percentages).
        verify: check the split's files against the manifest's SHA-256 and size (once per
            process per file; hashing CIFAR-10's training images takes about 0.2 s).

    Raises:
        MissingFileError: a file of the split is missing.
        InvalidInputError: unknown split (the splits found are listed), or a file whose size
            or SHA-256 differs from the manifest (damaged or truncated copy; named).
    """
    folder = Path(os.path.expanduser(str(folder)))
    manifest = read_manifest(folder)
    sizes = {name: info["num_examples"] for name, info in manifest["splits"].items()}
    base, rows = parse_split(split, sizes)
    info = manifest["splits"][base]
    for filename, expected in info["files"].items():
        path = folder / filename
        if not path.is_file():
            raise MissingFileError(f"{path} is missing from the prepared dataset {folder}.")
        if path.stat().st_size != expected["size"]:
            raise InvalidInputError(f"{path} has {path.stat().st_size} bytes; the manifest says "
                                    f"{expected['size']} (truncated or damaged copy).")
        if verify and sha256_file(path) != expected["sha256"]:
            raise InvalidInputError(f"{path} has SHA-256 {sha256_file(path)}; the manifest says "
                                    f"{expected['sha256']} (damaged copy).")
    images = np.load(folder / f"{base}.images.npy", mmap_mode="r")[rows]
    labels = np.load(folder / f"{base}.labels.npy")[rows]
    return array_source(manifest["name"], split, images, labels, manifest["label_names"],
                        encoded_bytes=int(images.nbytes))


def prepare_tfds(name: str, output, *, splits=None, data_dir=None, overwrite: bool = False) -> Path:
    """Writes TFDS dataset ``name`` (every split, or ``splits``) as a prepared dataset.

    Needs TensorFlow and tensorflow-datasets (``pip install keras-attention[tf]``); reads
    the prepared TFDS copy in ``data_dir`` / ``$TFDS_DATA_DIR`` (or downloads it).
    """
    splits = list(splits or tfds_split_names(name, data_dir=data_dir))
    arrays, labels_names = {}, None
    for split in splits:
        source = load_tfds(name, split, data_dir=data_dir)
        arrays[split] = (_decoded(source), source.labels)
        labels_names = source.label_names
    return write_prepared(output, name=name.split(":")[0], label_names=labels_names, splits=arrays,
                          source=f"tensorflow-datasets {name}", overwrite=overwrite)


def prepare_folder(root, output, *, splits=None, image_size: int | None = None,
                   overwrite: bool = False) -> Path:
    """Writes a class-folder dataset (``root/<split>/<class>/<image>``) as a prepared dataset.

    Args:
        image_size: if given, each image's shorter side is resized to ``image_size``
            (antialiased bilinear) and the central square kept; otherwise every image of a
            split must already have the same size.
    """
    root = Path(root)
    splits = list(splits or list_splits(root))
    label_names = None
    arrays = {}
    for split in splits:
        source = load_folder(root, split, label_names=label_names, progress=False)
        label_names = source.label_names
        images = source.read(np.arange(source.num_examples))
        if image_size:
            images = np.stack([np.round(eval_view(im, (image_size, image_size), 1.0)).astype(np.uint8)
                               if im.shape[:2] != (image_size, image_size) else im for im in images])
        else:
            shapes = {im.shape for im in images}
            if len(shapes) != 1:
                raise InvalidInputError(f"{root / split}: images have {len(shapes)} different sizes "
                                        f"(e.g. {sorted(shapes)[:3]}); pass image_size (--image-size) "
                                        f"to resize them to one.")
            images = np.stack(images)
        arrays[split] = (images, source.labels)
    return write_prepared(output, name=root.name, label_names=label_names, splits=arrays,
                          source=f"class folder {root.name}", overwrite=overwrite)


def _decoded(source: ImageSource) -> np.ndarray:
    if source.arrays is not None:
        return np.asarray(source.arrays)
    images = source.read(np.arange(source.num_examples))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise InvalidInputError(f"{source.describe()}: images differ in size {sorted(shapes)[:3]}; "
                                f"the prepared format holds one size per split.")
    return np.stack(images)
