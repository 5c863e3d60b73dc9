"""Class-folder datasets: ``root/<split>/<class>/<image>`` (a user's own images).

We list the files ourselves rather than use ``tfds.folder_dataset.ImageFolder`` or
``keras.utils.image_dataset_from_directory``: we need the file list to name a corrupt
file (neither library does; a decode error deep inside ``tf.data`` names no file),
to skip and count such files on request, to keep each image at its original size so
ImageNet-style random-resized crops see the whole image (``image_dataset_from_directory``
resizes every image to one size first), and to read folders without TensorFlow. Files are
checked and decoded with Pillow (the NumPy/grain path) or ``tf.io`` (the ``tf.data`` path).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keras_attention.data.source import ImageSource, parse_split, split_base
from keras_attention._errors import InvalidInputError

#: Formats both pipelines decode (Pillow's names; ``tf.io.decode_image`` reads the same five).
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


def check_image_header(path: str) -> str | None:
    """``None`` if Pillow identifies ``path`` as one of :data:`FORMATS` from its header
    (the pixels are not decoded), else the reason."""
    from PIL import Image, UnidentifiedImageError
    try:
        if os.path.getsize(path) == 0:
            return "is empty (0 bytes)"
        with Image.open(path) as img:
            fmt = img.format
    except UnidentifiedImageError:
        return f"is not a readable image (Pillow cannot identify it; expected {', '.join(FORMATS)})"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if fmt not in FORMATS:
        return f"is a {fmt} image; expected one of {', '.join(FORMATS)}"
    return None


def _check_decode(path: str) -> str | None:
    """``None`` if Pillow decodes ``path`` completely, else the reason."""
    reason = check_image_header(path)
    if reason:
        return reason
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as err:  # noqa: BLE001  (PIL raises many types for bad files)
        return f"cannot be decoded ({type(err).__name__}: {err})"
    return None


def find_corrupt_images(files, full: bool = True, progress: bool = True) -> dict[str, str]:
    """``{path: reason}`` for each file that is not a readable image.

    Args:
        files: image paths.
        full: decode each file completely with Pillow (slow, finds truncated files);
            ``False`` only checks the format signature in the first bytes (fast).
        progress: show a tqdm progress bar.
    """
    check = _check_decode if full else check_image_header
    files = list(files)
    bad = {}
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(check, files)
        if progress and full:
            from tqdm.auto import tqdm
            results = tqdm(results, total=len(files), desc="checking images", unit="img")
        for path, reason in zip(files, results):
            if reason:
                bad[path] = reason
    return bad


def list_splits(root: str | os.PathLike) -> list[str]:
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_folder(root: str | os.PathLike, split: str, *, label_names: list[str] | None = None,
                skip_corrupt: bool = False, verify: str = "header",
                progress: bool = True) -> ImageSource:
    """Opens ``root/<split>/<class>/*`` as an :class:`ImageSource` (files in sorted order).

    Classes are the sub-folders of ``root/<split>`` in sorted order (or
    ``label_names``, e.g. those of a trained model, in that order). Every
    non-hidden file in a class folder must be an image; hidden files (``.*``) are
    ignored.

    Args:
        root: dataset folder containing one folder per split.
        split: split folder name (``"train"``, ``"val"``, ...), optionally sliced as in
            TFDS (``"train[:1000]"``, ``"val[:10%]"``) over the sorted file list.
        label_names: class order to use; every class folder must be one of them
            (classes without a folder are allowed, e.g. evaluating on a subset).
        skip_corrupt: skip files that are not readable images (they are listed in
            ``ImageSource.skipped_files`` and counted in a warning) instead of
            raising.
        verify: ``"header"`` checks each file's format signature (fast; catches
            non-image files); ``"full"`` also decodes each file with Pillow (slow;
            catches truncated or damaged images); ``"none"`` checks nothing.
        progress: progress bar for ``verify="full"``.

    Raises:
        ValueError: ``root`` or the split folder does not exist (the message lists
            the splits found), a class folder holds no images, a class folder not
            in ``label_names``, or a corrupt/non-image file (named in the message)
            when ``skip_corrupt`` is false.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"Dataset folder {str(root)!r} does not exist or is not a folder.")
    base = split_base(split)
    split_dir = root / base
    if not split_dir.is_dir():
        found = list_splits(root)
        raise InvalidInputError(f"Split {base!r} not found in {str(root)!r}: expected a folder "
                         f"{str(split_dir)!r}; found split folders {found or 'none'}.")
    if verify not in ("header", "full", "none"):
        raise InvalidInputError(f"verify must be 'header', 'full' or 'none'; received {verify!r}.")
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = [p.name for p in split_dir.iterdir() if not p.name.startswith(".")][:5]
        raise InvalidInputError(f"{str(split_dir)!r} has no class folders (expected "
                         f"{base}/<class>/<image files>); found {loose or 'nothing'}.")
    names = list(label_names) if label_names is not None else [p.name for p in class_dirs]
    index = {n: i for i, n in enumerate(names)}
    files, labels, empty = [], [], []
    for class_dir in class_dirs:
        if class_dir.name not in index:
            raise InvalidInputError(f"Class folder {str(class_dir)!r} is not one of the model's "
                             f"{len(names)} classes ({', '.join(names[:10])}"
                             f"{', ...' if len(names) > 10 else ''}).")
        entries = sorted(p for p in class_dir.iterdir()
                         if p.is_file() and not p.name.startswith("."))
        if not entries:
            empty.append(class_dir.name)
        files.extend(str(p) for p in entries)
        labels.extend([index[class_dir.name]] * len(entries))
    if empty:
        counts = {p.name: sum(1 for q in p.iterdir() if q.is_file()) for p in class_dirs[:20]}
        raise InvalidInputError(f"Empty class folder(s) in {str(split_dir)!r}: {empty}; every class needs "
                         f"at least one image. Files per class found: {counts}.")
    rows = parse_split(split, {base: len(files)})[1]
    files, labels = files[rows], labels[rows]

    skipped = []
    if verify != "none":
        bad = find_corrupt_images(files, full=(verify == "full"), progress=progress)
        if bad and not skip_corrupt:
            path, reason = next(iter(bad.items()))
            more = f" ({len(bad) - 1} more bad files)" if len(bad) > 1 else ""
            raise InvalidInputError(f"Image file {path!r} {reason}{more}. Remove it, or skip such files "
                             f"with skip_corrupt=True (--skip-corrupt).")
        if bad:
            import warnings
            warnings.warn(f"Skipped {len(bad)} unreadable file(s) in {str(split_dir)!r}, e.g. "
                          f"{next(iter(bad))!r}.", stacklevel=2)
            keep = [i for i, f in enumerate(files) if f not in bad]
            skipped = sorted(bad)
            files = [files[i] for i in keep]
            labels = [labels[i] for i in keep]

    encoded_bytes = sum(os.path.getsize(f) for f in files)

    def tf_records():
        import tensorflow as tf
        paths = tf.data.Dataset.from_tensor_slices(
            (tf.constant(files), tf.constant(labels, dtype=tf.int64)))
        return paths.map(lambda p, y: (tf.io.read_file(p), y),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def on_decode_error(err):
        bad = find_corrupt_images(files, full=True, progress=progress)
        if bad:
            path, reason = next(iter(bad.items()))
            raise InvalidInputError(f"Image file {path!r} {reason} ({len(bad)} bad file(s) in "
                                    f"{str(split_dir)!r}); remove it or use --skip-corrupt with "
                                    f"--verify full.") from err

    return ImageSource(name=str(root), split=split, labels=labels, label_names=names,
                       encoded_bytes=encoded_bytes, files=files, skipped_files=skipped,
                       tf_records=tf_records, on_decode_error=on_decode_error)
