"""How images become model inputs: :class:`Preprocessing`, saved with the weights.

Shared by both input pipelines (:mod:`keras_attention.data.loader`, NumPy/Pillow/grain, and
:mod:`keras_attention.data.tf_pipeline`, ``tf.data``); TensorFlow is not needed here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from keras_attention._errors import InvalidInputError
from keras_attention.data.transforms import INTERPOLATIONS, RECIPES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)



@dataclass
class Preprocessing:
    """How images are turned into model inputs; saved with the weights.

    Field names follow the ``pretrained.json`` schema (``weights/README.md``).

    Attributes:
        input_size: ``(H, W, C)`` model input.
        crop_pct: evaluation crop fraction (shorter side resized to ``size / crop_pct``,
            then centre crop); ``1.0`` = no crop.
        interpolation: ``"bilinear"``, ``"bicubic"``, ``"nearest"`` or ``"area"``.
        mean, std: per-channel RGB normalisation on [0, 1] images.
        recipe: training augmentation, ``"cifar"``, ``"imagenet"`` or ``"none"``.
        pad: padding of the CIFAR recipe (pixels per side).
        scale, ratio: area and aspect-ratio ranges of the ImageNet recipe.
        hflip: random horizontal flips in training.
    """

    input_size: tuple = (224, 224, 3)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    recipe: str = "imagenet"
    pad: int = 4
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: bool = True

    def __post_init__(self):
        self.input_size = tuple(int(v) for v in self.input_size)
        if len(self.input_size) == 2:
            self.input_size = (*self.input_size, 3)
        if len(self.input_size) != 3 or self.input_size[2] != 3 or min(self.input_size) <= 0:
            raise InvalidInputError(f"input_size must be (H, W, 3) with positive H, W; received "
                             f"{self.input_size}.")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise InvalidInputError(f"crop_pct must be in (0, 1]; received {self.crop_pct}.")
        self.crop_pct = float(self.crop_pct)
        if self.interpolation not in INTERPOLATIONS:
            raise InvalidInputError(f"interpolation must be one of {INTERPOLATIONS}; received "
                             f"{self.interpolation!r}.")
        if self.recipe not in RECIPES:
            raise InvalidInputError(f"recipe must be one of {RECIPES}; received {self.recipe!r}.")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InvalidInputError(f"mean and std must be 3 values each (std > 0); received "
                             f"mean={self.mean}, std={self.std}.")
        self.scale = tuple(float(v) for v in self.scale)
        self.ratio = tuple(float(v) for v in self.ratio)

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size[:2]

    def to_config(self) -> dict:
        cfg = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}

    @classmethod
    def from_config(cls, cfg: dict) -> "Preprocessing":
        """From a dict such as a ``pretrained.json`` entry (unknown keys ignored)."""
        names = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in cfg.items() if k in names and v is not None}
        if "recipe" not in kwargs:
            kwargs["recipe"] = "none"
        return cls(**kwargs)
