"""The committed handwritten digit images and their conversion to model input.

``examples/digits/<d>.png`` is a 28x28 8-bit grayscale picture of digit ``d``.
The mnist model takes ``pixel / 255`` as float32 with shape [N, 28, 28, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DIGITS_DIR = Path(__file__).resolve().parents[2] / "examples" / "digits"
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def digit_images() -> list[Path]:
    """All committed digit images, sorted by name."""
    return sorted(DIGITS_DIR.glob("*.png"))


def label_of(path: Path) -> int:
    """The digit a committed image shows, taken from its file name."""
    return int(path.stem)


def load_image(path: Path) -> np.ndarray:
    """One image as model input without the batch axis: float32 [28, 28, 1]."""
    with Image.open(path) as image:
        if image.mode != "L" or image.size != IMAGE_SHAPE[:2]:
            raise ValueError(
                f"{path}: expected a 28x28 8-bit grayscale PNG, "
                f"got mode {image.mode} size {image.size}"
            )
        pixels = np.asarray(image, dtype=np.uint8)
    return (pixels.astype(np.float32) / 255.0).reshape(IMAGE_SHAPE)


def load_batch(paths: list[Path]) -> np.ndarray:
    """Several images stacked into one model input: float32 [N, 28, 28, 1]."""
    return np.stack([load_image(path) for path in paths])
