"""Label hierarchies: each fine class maps to one parent per coarser granularity level.

A hierarchy is data, a JSON object (or the same ``dict``)::

    {"levels": ["group", "subgroup"],                  # coarser levels, coarsest first
     "parents": {"n02088364": ["n02087122", "n02087551"], ...},  # fine class -> one parent per level
     "fine_level": "breed",                            # optional: the fine level's name ("fine")
     "classes": ["n02086240", ...],                    # optional: fine class order (default sorted,
                                                       #   the order of class folders)
     "names": {"n02087551": "hound, hound dog", ...},  # optional: readable names
     "source": "...", ...}                             # optional: provenance, kept as given

Built-in hierarchies live in ``keras_attention/data/hierarchies/<name>.json`` (package data):
``"imagewoof"`` is the WordNet hypernym hierarchy of Imagewoof's ten breeds (its ``source`` and
``level_rule`` fields say how it was derived). The multi-granularity model
(:mod:`keras_attention.models.granularity`) derives each coarser level's labels from the fine
label with :meth:`Hierarchy.mapping_matrix`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_attention._errors import InvalidInputError, did_you_mean

HIERARCHY_DIR = Path(__file__).resolve().parent / "hierarchies"
_KNOWN_KEYS = {"levels", "parents", "fine_level", "classes", "names"}


def builtin_hierarchies() -> list[str]:
    """Names of the hierarchies shipped with the package (``"imagewoof"``)."""
    return sorted(p.stem for p in HIERARCHY_DIR.glob("*.json"))


@dataclass(frozen=True)
class Hierarchy:
    """A validated label hierarchy (build it with :func:`load_hierarchy` or :func:`parse_hierarchy`).

    Attributes:
        levels: the coarser levels' names, coarsest first (may be empty: the fine level only).
        classes: fine class names in class-index order.
        parents: ``{fine class: (parent at levels[0], parent at levels[1], ...)}``.
        fine_level: name of the fine level (``"fine"`` unless the mapping names it).
        extra: every other field of the mapping (``names``, ``source``, ...), kept as given.
    """

    levels: tuple[str, ...]
    classes: tuple[str, ...]
    parents: dict
    fine_level: str = "fine"
    extra: dict = field(default_factory=dict)

    @property
    def all_levels(self) -> tuple[str, ...]:
        """Every level, coarsest first, the fine level last."""
        return (*self.levels, self.fine_level)

    def level_classes(self, level: str) -> tuple[str, ...]:
        """The classes of ``level`` in index order: sorted parent names (the fine classes for the fine level)."""
        index = self._index(level)
        if index == len(self.levels):
            return self.classes
        return tuple(sorted({self.parents[c][index] for c in self.classes}))

    def mapping_matrix(self, level: str) -> np.ndarray:
        """``(K_fine, K_level)`` float32 0/1 matrix: row ``i`` is fine class ``i``'s parent at ``level``.

        A one-hot (or smoothed) fine label ``y`` ``(N, K_fine)`` gives the level's label as ``y @ M``.
        """
        index = self._index(level)
        coarse = self.level_classes(level)
        position = {name: j for j, name in enumerate(coarse)}
        matrix = np.zeros((len(self.classes), len(coarse)), "float32")
        for i, name in enumerate(self.classes):
            matrix[i, position[name if index == len(self.levels) else self.parents[name][index]]] = 1.0
        return matrix

    def coarse_labels(self, fine_labels, level: str) -> np.ndarray:
        """Integer fine labels ``(N,)`` -> that level's integer labels ``(N,)`` (NumPy)."""
        return np.argmax(self.mapping_matrix(level)[np.asarray(fine_labels, "int64")], axis=-1)

    def name(self, label: str) -> str:
        """A readable name of a class or parent (the ``names`` field, else the label itself)."""
        return str(self.extra.get("names", {}).get(label, label))

    def to_dict(self) -> dict:
        """The mapping as JSON-able data (what :func:`parse_hierarchy` reads back)."""
        return {**self.extra, "levels": list(self.levels), "fine_level": self.fine_level,
                "classes": list(self.classes), "parents": {c: list(self.parents[c]) for c in self.classes}}

    def _index(self, level: str) -> int:
        levels = self.all_levels
        if level not in levels:
            raise InvalidInputError(f"Unknown level {level!r}; this hierarchy has levels {list(levels)}.")
        return levels.index(level)


def _strings(name: str, value) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInputError(f"Hierarchy field {name!r} must be a list of non-empty strings, received {value!r}.")
    duplicates = sorted({v for v in value if list(value).count(v) > 1})
    if duplicates:
        raise InvalidInputError(f"Hierarchy field {name!r} repeats {duplicates}.")
    return list(value)


def parse_hierarchy(mapping: dict, classes=None) -> Hierarchy:
    """Validates a hierarchy mapping (module docstring) and returns a :class:`Hierarchy`.

    Args:
        mapping: ``{"levels": [...], "parents": {fine_class: [one parent per level]}, ...}``.
        classes: the fine classes the hierarchy must cover exactly, in class-index order (e.g. a
            dataset's ``label_names``); default the mapping's ``classes``, else its sorted keys.

    Raises:
        InvalidInputError: (a ``ValueError``) not a mapping; ``levels`` or ``parents`` missing or
            malformed; a fine class without exactly one (non-empty string) parent per level (the
            class and what it has are named); fine classes missing from ``parents`` or unknown to
            ``classes`` (named); a level name repeated or equal to the fine level's.
    """
    if not isinstance(mapping, dict):
        raise InvalidInputError(f"A hierarchy must be a mapping {{'levels': [...], 'parents': {{...}}}}, "
                                f"received {type(mapping).__name__}.")
    missing = [key for key in ("levels", "parents") if key not in mapping]
    if missing:
        raise InvalidInputError(f"Hierarchy is missing {missing}; it needs 'levels' (coarser level names, "
                                f"coarsest first) and 'parents' ({{fine class: [one parent per level]}}).")
    levels = _strings("levels", mapping["levels"])
    fine_level = mapping.get("fine_level", "fine")
    if not isinstance(fine_level, str) or not fine_level:
        raise InvalidInputError(f"Hierarchy field 'fine_level' must be a non-empty string, received {fine_level!r}.")
    if fine_level in levels:
        raise InvalidInputError(f"The fine level's name {fine_level!r} is also a coarser level in {levels}.")
    parents = mapping["parents"]
    if not isinstance(parents, dict) or not parents:
        raise InvalidInputError(f"Hierarchy field 'parents' must be a non-empty mapping {{fine class: [parent per "
                                f"level]}}, received {parents!r}.")
    bad = {}
    for name, value in parents.items():
        if isinstance(value, str) and len(levels) == 1:
            value = [value]
        if (not isinstance(value, (list, tuple)) or len(value) != len(levels)
                or not all(isinstance(v, str) and v for v in value)):
            bad[name] = value
    if bad:
        shown = ", ".join(f"{k!r}: {v!r}" for k, v in list(bad.items())[:5])
        raise InvalidInputError(f"Every fine class needs exactly one parent (a non-empty string) per level "
                                f"{levels}: {len(bad)} class(es) do not ({shown}{' ...' if len(bad) > 5 else ''}).")
    if classes is None:
        classes = mapping.get("classes", sorted(parents))
    classes = _strings("classes", classes)
    unknown = sorted(set(parents) - set(classes))
    absent = sorted(set(classes) - set(parents))
    if absent or unknown:
        parts = []
        if absent:
            parts.append(f"fine classes without parents: {absent}")
        if unknown:
            hint = did_you_mean(unknown[0], classes) if len(unknown) == 1 else ""
            parts.append(f"unknown fine classes (not among the {len(classes)} classes): {unknown}{hint}")
        raise InvalidInputError("The hierarchy does not match the fine classes: " + "; ".join(parts) + ".")
    normalised = {c: tuple([parents[c]] if isinstance(parents[c], str) else parents[c]) for c in classes}
    extra = {k: v for k, v in mapping.items() if k not in _KNOWN_KEYS | {"classes"}}
    if "names" in mapping:
        extra["names"] = dict(mapping["names"])
    return Hierarchy(tuple(levels), tuple(classes), normalised, fine_level, extra)


def load_hierarchy(spec, classes=None) -> Hierarchy:
    """A hierarchy from a built-in name (``"imagewoof"``), a JSON file path, a mapping, or a :class:`Hierarchy`.

    Args:
        spec: see above; a string that is not a built-in name is read as a file path.
        classes: the fine classes to check it against, in class-index order (see :func:`parse_hierarchy`).

    Raises:
        InvalidInputError: unknown name and no such file (the built-in names listed), a file that is
            not valid JSON, or an invalid mapping (:func:`parse_hierarchy`).
        TypeError: ``spec`` of another type.
    """
    if isinstance(spec, Hierarchy):
        return spec if classes is None else parse_hierarchy(spec.to_dict(), classes)
    if isinstance(spec, dict):
        return parse_hierarchy(spec, classes)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"`hierarchy` must be a built-in name, a JSON path or a mapping, received "
                        f"{type(spec).__name__}.")
    path = Path(spec)
    if isinstance(spec, str) and spec in builtin_hierarchies():
        path = HIERARCHY_DIR / f"{spec}.json"
    elif not path.is_file():
        raise InvalidInputError(f"No hierarchy {str(spec)!r}: not a built-in one ({builtin_hierarchies()}) "
                                f"and no such file.")
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"Hierarchy file {path} is not valid JSON: {err}.") from err
    return parse_hierarchy(mapping, classes)
