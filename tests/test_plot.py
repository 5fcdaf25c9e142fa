"""nodes/plot.py: the λ bar chart (torch + PIL only), loaded from its file so no ComfyUI is needed."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
pytest.importorskip("PIL")

spec = importlib.util.spec_from_file_location("dode_plot", Path(__file__).resolve().parents[1] / "nodes" / "plot.py")
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)

BLUE, ORANGE = torch.tensor(plot.POSITIVE) / 255, torch.tensor(plot.NEGATIVE) / 255


def pixels(image, colour):
    return int((image[0] - colour).abs().amax(-1).lt(1e-3).sum())


def test_chart_is_a_comfyui_image_with_bars_on_both_sides_of_zero():
    image = plot.distill_plot("euler", 5, [0.0, 0.3, -0.2, 0.1, 0.05], [8.0, 4.0, 2.0, 1.0, 0.0], 0.0123, 0.0045,
                              teacher="dpmpp_2m", scale=10)
    assert image.shape == (1, 300, 480, 3) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.is_contiguous()
    assert pixels(image, BLUE) > 500 and pixels(image, ORANGE) > 200


def bar_heights(image, colour):
    """Height in pixels of each bar of ``colour``, left to right (runs of columns that contain it)."""
    per_column = (image[0] - colour).abs().amax(-1).lt(1e-3).sum(0).tolist()
    heights, run = [], 0
    for count in per_column + [0]:
        if count:
            run = max(run, count)
        elif run:
            heights.append(run)
            run = 0
    return heights


def test_bar_heights_follow_lambda():
    image = plot.lambda_plot([1.0, 0.5, -0.25], [2.0, 1.0, 0.0], width=300, height=260)
    (big, half), (neg,) = bar_heights(image, BLUE), bar_heights(image, ORANGE)
    assert abs(big - 2 * half) <= 2 and abs(half - 2 * neg) <= 2
    assert pixels(plot.lambda_plot([0.0, -1.0], [1.0, 0.0]), BLUE) == 0


def test_all_zero_nan_and_many_evaluations():
    flat = plot.lambda_plot([0.0, 0.0, 0.0], [2.0, 1.0, 0.0])  # no bars, still a chart (zero line, axes)
    assert pixels(flat, BLUE) == pixels(flat, ORANGE) == 0 and flat.min() < 0.5
    odd = plot.distill_plot("heun", 3, [0.0, math.nan, 0.2], [3.0, 1.0, 0.0], math.nan, math.inf)
    assert odd.shape[1:] == (300, 480, 3)
    many = plot.lambda_plot([0.01 * i for i in range(120)], [14.6 * (1 - i / 120) ** 3 for i in range(120)])
    assert many.shape == (1, 300, 1024, 3)
    with pytest.raises(ValueError, match="one σ per λ"):
        plot.lambda_plot([0.1, 0.2], [1.0])


@pytest.mark.parametrize("values, lo, hi", [([0.31, -0.12], -0.2, 0.4), ([2.0, 7.0], 0.0, 8.0), ([-2.7e-3], -3e-3, 0.0)])
def test_value_range_covers_zero_and_the_values_on_ticks(values, lo, hi):
    got_lo, got_hi, step = plot.value_range(values)
    assert got_lo == pytest.approx(lo) and got_hi == pytest.approx(hi) and step > 0
