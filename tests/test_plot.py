"""plot.py: the Pillow charts and digit grids (the node's λ chart, the demo figure), checked by their pixels."""
import math

import pytest
import torch

torch.set_num_threads(1)
pytest.importorskip("PIL", reason="the charts need Pillow (a dode dependency: pip install pillow)")

from dode import plot  # noqa: E402  (after the skip: plot imports PIL)

BLUE, ORANGE, GREY = (torch.tensor(c) / 255 for c in (plot.POSITIVE, plot.NEGATIVE, plot.STOCK))


def as_tensor(img):
    return plot.to_image_tensor(img) if not torch.is_tensor(img) else img


def mask(image, colour):
    """(H, W) bool: where ``image`` (a PIL image or a ComfyUI IMAGE) has exactly ``colour``."""
    return (as_tensor(image)[0] - colour).abs().amax(-1).lt(1e-3)


def pixels(image, colour):
    return int(mask(image, colour).sum())


def bar_heights(image, colour):
    """Height in pixels of each bar of ``colour``, left to right (runs of columns that contain it)."""
    per_column = mask(image, colour).sum(0).tolist()
    heights, run = [], 0
    for count in per_column + [0]:
        if count:
            run = max(run, count)
        elif run:
            heights.append(run)
            run = 0
    return heights


def test_node_chart_is_a_comfyui_image_with_bars_on_both_sides_of_zero():
    image = plot.distill_plot("euler", 5, [0.0, 0.3, -0.2, 0.1, 0.05], [8.0, 4.0, 2.0, 1.0, 0.0], 0.0123, 0.0045,
                              teacher="dpmpp_2m", scale=10)
    assert image.shape == (1, 300, 480, 3) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.is_contiguous()
    assert len(bar_heights(image, BLUE)) == 3 and len(bar_heights(image, ORANGE)) == 1
    other = plot.distill_plot("euler", 5, [0.0, 0.3, -0.2, 0.1, 0.05], [8.0, 4.0, 2.0, 1.0, 0.0], 0.0123, 0.0045,
                              teacher="dpmpp_2m", scale=10, caption="sigma each evaluation's step lands on")
    changed = (other != image).any(-1)[0].nonzero()
    assert len(changed) and changed[:, 0].min() >= 300 - 22  # only the caption line, at the bottom, differs


def test_bar_heights_follow_lambda():
    image = plot.lambda_chart([1.0, 0.5, -0.25], [2.0, 1.0, 0.0], width=300, height=260)
    (big, half), (neg,) = bar_heights(image, BLUE), bar_heights(image, ORANGE)
    assert abs(big - 2 * half) <= 2 and abs(half - 2 * neg) <= 2
    assert pixels(plot.lambda_chart([0.0, -1.0], [1.0, 0.0]), BLUE) == 0


def test_nan_lambda_is_drawn_as_zero_and_unknown_rmse_as_n_a():
    odd = plot.distill_plot("heun", 3, [0.0, math.nan, 0.2], [3.0, 1.0, 0.0], math.nan, math.inf)
    assert torch.equal(odd, plot.distill_plot("heun", 3, [0.0, 0.0, 0.2], [3.0, 1.0, 0.0], None, None))
    assert not torch.equal(odd, plot.distill_plot("heun", 3, [0.0, 0.0, 0.2], [3.0, 1.0, 0.0], 0.5, None))
    flat = plot.lambda_chart([0.0, 0.0, 0.0], [2.0, 1.0, 0.0])  # no bars, still a chart (zero line, axes)
    assert pixels(flat, BLUE) == pixels(flat, ORANGE) == 0 and as_tensor(flat).min() < 0.5


def test_many_evaluations_widen_the_chart_and_keep_one_bar_each():
    values = [0.01 * i for i in range(60)]
    many = plot.lambda_chart(values, [14.6 * (1 - i / 60) ** 3 for i in range(60)])
    assert (many.width, many.height) == (1024, 300)
    heights = bar_heights(many, BLUE)
    assert len(heights) == 59 and heights == sorted(heights) and heights[-1] > 50 * heights[0]
    with pytest.raises(ValueError, match="one σ per λ"):
        plot.lambda_chart([0.1, 0.2], [1.0])


@pytest.mark.parametrize("values, lo, hi", [([0.31, -0.12], -0.2, 0.4), ([2.0, 7.0], 0.0, 8.0),
                                             ([-2.7e-3], -3e-3, 0.0)])
def test_value_range_covers_zero_and_the_values_on_ticks(values, lo, hi):
    got_lo, got_hi, step = plot.value_range(values)
    assert got_lo == pytest.approx(lo) and got_hi == pytest.approx(hi) and step > 0


def marker_rows(image, colour, columns):
    """Mean row of ``colour`` in each of ``columns`` (± 1 px): where a line chart's markers sit."""
    hit = mask(image, colour)
    rows = torch.arange(hit.shape[0], dtype=torch.float64)
    out = []
    for x in columns:
        m = hit[:, round(x) - 1:round(x) + 2].any(1)
        out.append(float(rows[m].mean()) if m.any() else math.nan)
    return out


def test_schedule_chart_puts_sigma_on_a_log_axis():
    width = 480
    stock, fitted = torch.tensor([100.0, 10.0, 1.0, 0.0]), torch.tensor([100.0, 1.0, 0.1, 0.0])
    chart = plot.schedule_chart(stock, fitted, width=width, height=300)
    assert (chart.width, chart.height) == (width, 300)
    # the step columns, from the span of the fitted line and its markers (below the legend on the title line)
    blue_cols = mask(chart, BLUE)[28:].any(0).nonzero().flatten().tolist()
    left_edge, right_edge = blue_cols[0], blue_cols[-1]
    centres = [left_edge + 3.5, None, right_edge - 3.5]
    centres[1] = (centres[0] + centres[2]) / 2
    s1, s2 = marker_rows(chart, GREY, centres[1:])
    f0, f1, f2 = marker_rows(chart, BLUE, centres)
    decade = s2 - s1  # 10 → 1 on the stock grid
    assert decade > 20
    assert f1 - s1 == pytest.approx(decade, abs=2) and f2 - s2 == pytest.approx(decade, abs=2)  # fitted: 10× lower
    assert s1 - f0 == pytest.approx(decade, abs=2)  # 100 sits one decade above 10
    line = mask(chart, torch.tensor(plot.GRID) / 255)
    decade_rows = line.sum(1).gt(width // 2).nonzero().flatten().tolist()  # the grid lines at 0.1, 1, 10, 100
    assert len(decade_rows) == 4
    for y in (f0, s1, s2, f2):  # 100, 10, 1, 0.1: every marker sits on its decade's grid line
        assert min(abs(y - r) for r in decade_rows) <= 1.5
    stock_only = plot.schedule_chart(stock, None)
    assert pixels(stock_only, BLUE) == 0 and pixels(stock_only, GREY) > 100
    with pytest.raises(ValueError, match="same length"):
        plot.schedule_chart(stock, fitted[1:])
    with pytest.raises(ValueError, match="at least one σ > 0"):
        plot.schedule_chart([0.0], None)


def test_digit_grid_is_square_nearest_neighbour_cells_with_light_gaps():
    images = -torch.ones(6, 1, 8, 8)
    images[:, 0, 0, 0] = 1.0  # one ink pixel in each cell's top-left corner
    images[4] = 1.0  # cell 4 (row 1, column 1) is all ink
    grid = plot.digit_grid(images, rows=2, cols=3, zoom=5, gap=3)
    assert (grid.width, grid.height) == (3 * 40 + 2 * 3, 2 * 40 + 3)
    t = as_tensor(grid)[0]
    assert torch.equal(t[0:5, 0:5], torch.zeros(5, 5, 3)) and (t[5:40, 5:40] == 1).all()  # one pixel → 5×5 block
    gap = torch.tensor(plot.GAP) / 255
    assert (t[:, 40:43] - gap).abs().max() < 1e-6 and (t[40:43, :] - gap).abs().max() < 1e-6
    assert gap.min() > 0.85  # light: a gap never reads as ink
    assert (t[43:83, 43:83] == 0).all()  # cell 4, at row 1, column 1
    with pytest.raises(ValueError, match="at least 7 images"):
        plot.digit_grid(images, rows=1, cols=7)


def test_labelled_rows_and_figure_place_every_part():
    strip = plot.digit_grid(torch.ones(4, 8, 8), 1, 4, zoom=2, gap=1)  # all ink: black
    body = plot.labelled_rows([("a", "b", strip), ("c", "d", strip)], label_width=100, spacing=10)
    assert (body.width, body.height) == (100 + strip.width, 2 * strip.height + 10)
    black = as_tensor(body)[0].amax(-1) == 0
    assert black[:, 100:].sum() == 2 * 4 * 16 * 16 and black[:, 100:102].all(-1).sum() == 2 * 16
    chart = plot.lambda_chart([0.5, -0.5], [1.0, 0.0], width=200, height=150)
    fig = plot.compare_figure("title", body, [chart, chart], note=["one", "two"])
    assert fig.width == max(body.width, 2 * 200 + 24) + 40
    assert pixels(fig, BLUE) == 2 * pixels(chart, BLUE) and pixels(fig, ORANGE) == 2 * pixels(chart, ORANGE)
