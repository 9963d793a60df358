"""The pictures of the model and data cards (hf_llm.plots): readable PNGs of the stated size that show something,
byte-for-byte the same for the same input, and None where there is nothing to draw."""

import io
import math

import numpy as np
import pytest
from matplotlib.image import imread

from hf_llm.plots import HEIGHT, WIDTH, learning_rate_png, loss_curve_png, rejections_png, token_length_png

# A run's history as the loop records it: training points every step, validation every 5 steps.
HISTORY = [point for step in range(1, 21) for point in (
    {"step": step, "loss": 6 * math.exp(-step / 8) + 2, "lr": 1e-3 * min(1, step / 4), "tokens_seen": 512 * step},
    *([{"step": step, "val_loss": 6 * math.exp(-step / 8) + 2.3}] if step % 5 == 0 else []))]
HISTOGRAM = {"edges": [16, 32, 64, 128, 256], "counts": [3, 10, 40, 7], "documents": 60}

PICTURES = {
    "loss": lambda: loss_curve_png(HISTORY),
    "validation only": lambda: loss_curve_png([p for p in HISTORY if "val_loss" in p]),
    "learning rate": lambda: learning_rate_png(HISTORY),
    "token lengths": lambda: token_length_png(HISTOGRAM),
    "no documents": lambda: token_length_png({"edges": [], "counts": [], "documents": 0}),
    "rejections": lambda: rejections_png({"exact_dup": 12, "gopher_repetition": 3, "malformed": 1}),
}


@pytest.mark.parametrize("name", list(PICTURES))
def test_every_picture_is_a_readable_png_of_the_stated_size(name):
    png = PICTURES[name]()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 2  # drawn on, not a blank canvas
    assert PICTURES[name]() == png and b"Matplotlib" not in png  # the same bytes again; no version stamp


def test_a_picture_with_nothing_to_show_is_none():
    assert loss_curve_png([]) is None and loss_curve_png([{"step": 1, "lr": 1e-3}]) is None
    assert learning_rate_png([{"step": 5, "val_loss": 2.0}]) is None
    assert rejections_png({}) is None and rejections_png({"empty": 0}) is None


def test_pictures_differ_with_their_data():
    assert loss_curve_png(HISTORY) != loss_curve_png(HISTORY[:10])
    assert token_length_png(HISTOGRAM) != token_length_png({**HISTOGRAM, "counts": [40, 10, 3, 7]})
