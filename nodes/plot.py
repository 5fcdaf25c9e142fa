"""A small bar chart of λ per network evaluation, drawn with PIL (ComfyUI ships Pillow, not matplotlib).

Torch and PIL only; returns a ComfyUI IMAGE tensor ``[1, H, W, 3]``, float32 in [0, 1]. Text is ASCII ("lambda",
"sigma", "->") because PIL's built-in font is not guaranteed to have Greek letters or arrows."""
import math

import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)
POSITIVE = (52, 101, 164)
NEGATIVE = (214, 95, 40)


def font(size=12):
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()  # older Pillow: the fixed bitmap font


def text_width(draw, text, fnt):
    return draw.textlength(text, font=fnt)


def nice_step(span, ticks=4):
    """A 1/2/5 × 10^k step that cuts ``span`` into about ``ticks`` intervals."""
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def value_range(values):
    """[lo, hi] covering every value and 0, padded, on tick multiples (a flat set gets [-1, 1])."""
    lo, hi = min(min(values, default=0.0), 0.0), max(max(values, default=0.0), 0.0)
    if hi - lo < 1e-12:
        return -1.0, 1.0, 0.5
    step = nice_step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def to_image_tensor(img):
    """A PIL RGB image as a ComfyUI IMAGE: ``[1, H, W, 3]`` float32 in [0, 1]."""
    data = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
    return (data.reshape(1, img.height, img.width, 3).float() / 255.0).contiguous()


def lambda_plot(lambdas, sigmas, title="", subtitle="", width=None, height=300):
    """λ per network evaluation as bars from a zero line; x labels are the σ each evaluation lands on.

    ``lambdas`` and ``sigmas`` have one value per evaluation. ``title`` and ``subtitle`` go above the chart (on one
    line when they fit). ``width`` defaults to one that grows with the number of evaluations (480–1024 px)."""
    values = [float(v) if math.isfinite(float(v)) else 0.0 for v in lambdas]
    sigmas = [float(s) for s in sigmas]
    if len(values) != len(sigmas):
        raise ValueError(f"one σ per λ: got {len(values)} λ and {len(sigmas)} σ")
    n = max(len(values), 1)
    if width is None:
        width = int(min(1024, max(480, 80 + 34 * n)))
    small, normal = font(11), font(13)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)

    # title: one line if it fits, else two
    lines = [t for t in (title, subtitle) if t]
    joined = "  |  ".join(lines)
    if lines and text_width(draw, joined, normal) <= width - 20:
        lines = [joined]
    top = 10
    for line in lines:
        draw.text((10, top), line, fill=INK, font=normal)
        top += 18
    top += 8

    lo, hi, step = value_range(values)
    ticks = [lo + k * step for k in range(int(round((hi - lo) / step)) + 1)]
    tick_text = [f"{t:.3g}" for t in ticks]
    left = 16 + max(text_width(draw, t, small) for t in tick_text)
    right, bottom = width - 12, height - 44
    plot_h = max(bottom - top, 10)

    def y_of(v):
        return bottom - (v - lo) / (hi - lo) * plot_h

    for t, label in zip(ticks, tick_text):
        y = y_of(t)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((left - 6 - text_width(draw, label, small), y - 6), label, fill=INK, font=small)
    slot = (right - left) / n
    bar = max(slot * 0.7, 1.0)
    zero = y_of(0.0)
    label_every = max(1, math.ceil(max((text_width(draw, f"{s:.3g}", small) + 6 for s in sigmas), default=1) / slot))
    for i, (v, s) in enumerate(zip(values, sigmas)):
        x0 = left + i * slot + (slot - bar) / 2
        y = y_of(v)
        if v != 0:
            draw.rectangle([x0, min(y, zero), x0 + bar, max(y, zero)], fill=POSITIVE if v > 0 else NEGATIVE)
        text = f"{v:.2f}"
        if text_width(draw, text, small) <= slot - 2:  # the value above (or below) its bar, where there is room
            ty = min(y, zero) - 13 if v >= 0 else max(y, zero) + 1
            draw.text((x0 + bar / 2 - text_width(draw, text, small) / 2, ty), text, fill=INK, font=small)
        if i % label_every == 0:
            label = f"{s:.3g}"
            cx = left + (i + 0.5) * slot
            draw.line([(cx, bottom), (cx, bottom + 3)], fill=INK)
            draw.text((cx - text_width(draw, label, small) / 2, bottom + 5), label, fill=INK, font=small)
    draw.line([(left, zero), (right, zero)], fill=INK, width=1)
    draw.line([(left, top), (left, bottom)], fill=INK)
    caption = "sigma each network evaluation lands on  (bars: lambda)"
    draw.text(((left + right) / 2 - text_width(draw, caption, small) / 2, height - 20), caption, fill=INK,
              font=small)
    return to_image_tensor(img)


def distill_plot(sampler, steps, lambdas, sigmas, rmse_stock, rmse_dode, teacher=None, scale=None):
    """The Distill λ node's chart: title with sampler, steps and the stock → D-ODE RMSE to the teacher."""
    title = f"D-ODE lambda per evaluation: {sampler}, {steps} steps"
    if teacher:
        title += f" (teacher {teacher}" + (f" x{scale})" if scale else ")")

    def fmt(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"

    subtitle = f"RMSE to teacher: stock {fmt(rmse_stock)} -> D-ODE {fmt(rmse_dode)}"
    return lambda_plot(lambdas, sigmas, title=title, subtitle=subtitle)
