"""Charts and sample grids drawn with Pillow: dode's one plotting module (ComfyUI ships Pillow, not matplotlib).

Torch and Pillow only. Every function takes plain numbers or tensors and returns a PIL image, so the demo, the bench
and the ComfyUI node share them; ``to_image_tensor`` turns one into a ComfyUI IMAGE. Text is ASCII ("lambda",
"sigma", "->") because Pillow's built-in font has no Greek letters or arrows."""
import math

import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
GRID = (225, 225, 225)
GAP = (232, 235, 240)  # between digit cells: light, so it never reads as ink
POSITIVE = (52, 101, 164)
NEGATIVE = (214, 95, 40)
STOCK = (150, 150, 150)
FITTED = POSITIVE


def font(size=12):
    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()  # older Pillow: the fixed bitmap font


def text_width(draw, text, fnt):
    return draw.textlength(text, font=fnt)


def centered_text(draw, cx, y, text, fnt, fill=INK):
    draw.text((cx - text_width(draw, text, fnt) / 2, y), text, fill=fill, font=fnt)


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


def decades(values):
    """The powers of ten k with 10^floor(log10 min) ≤ 10^k ≤ 10^ceil(log10 max): log-axis ticks for ``values`` > 0."""
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    return list(range(lo, max(hi, lo + 1) + 1))


def to_image_tensor(img):
    """A PIL RGB image as a ComfyUI IMAGE: ``[1, H, W, 3]`` float32 in [0, 1]."""
    data = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
    return (data.reshape(1, img.height, img.width, 3).float() / 255.0).contiguous()


def floats(values):
    return [float(v) for v in (values.tolist() if torch.is_tensor(values) else values)]


def header(draw, width, title, subtitle, fnt):
    """Draws ``title`` and ``subtitle`` (one line when they fit, else two) and returns the y below them."""
    lines = [t for t in (title, subtitle) if t]
    joined = "  |  ".join(lines)
    if lines and text_width(draw, joined, fnt) <= width - 20:
        lines = [joined]
    top = 10
    for line in lines:
        draw.text((10, top), line, fill=INK, font=fnt)
        top += 18
    return top + 8


def y_axis(draw, ticks, labels, y_of, left, right, fnt):
    """Horizontal grid lines at ``ticks`` with their labels left of x = ``left``."""
    for t, label in zip(ticks, labels):
        y = y_of(t)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((left - 6 - text_width(draw, label, fnt), y - 6), label, fill=INK, font=fnt)


def lambda_chart(lambdas, sigmas, title="", subtitle="", width=None, height=300,
                 caption="sigma the network is evaluated at  (bars: lambda)"):
    """λ per network evaluation as bars from a zero line (blue above, orange below); x labels are ``sigmas``.

    ``lambdas`` and ``sigmas`` have one value per evaluation (a NaN or infinite λ is drawn as 0). ``width`` defaults
    to one that grows with the number of evaluations (480–1024 px)."""
    values = [v if math.isfinite(v) else 0.0 for v in floats(lambdas)]
    sigmas = floats(sigmas)
    if len(values) != len(sigmas):
        raise ValueError(f"one σ per λ: got {len(values)} λ and {len(sigmas)} σ")
    n = max(len(values), 1)
    if width is None:
        width = int(min(1024, max(480, 80 + 34 * n)))
    small, normal = font(11), font(13)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    top = header(draw, width, title, subtitle, normal)

    lo, hi, step = value_range(values)
    ticks = [lo + k * step for k in range(int(round((hi - lo) / step)) + 1)]
    tick_text = [f"{t:.3g}" for t in ticks]
    left = 16 + max(text_width(draw, t, small) for t in tick_text)
    right, bottom = width - 12, height - 44
    plot_h = max(bottom - top, 10)

    def y_of(v):
        return bottom - (v - lo) / (hi - lo) * plot_h

    y_axis(draw, ticks, tick_text, y_of, left, right, small)
    slot = (right - left) / n
    bar = max(slot * 0.7, 1.0)
    zero = y_of(0.0)
    label_every = max(1, math.ceil(max((text_width(draw, f"{s:.3g}", small) + 6 for s in sigmas), default=1) / slot))
    for i, (v, s) in enumerate(zip(values, sigmas)):
        x0 = left + i * slot + (slot - bar) / 2
        y = y_of(v)
        if v != 0:
            draw.rectangle([x0, min(y, zero), x0 + bar, max(y, zero)], fill=POSITIVE if v > 0 else NEGATIVE)
        text = f"{0.0 if abs(v) < 0.005 else v:.2f}"  # no "-0.00"
        if text_width(draw, text, small) <= slot - 2:  # the value above (or below) its bar, where there is room
            ty = min(y, zero) - 13 if v >= 0 else max(y, zero) + 1
            centered_text(draw, x0 + bar / 2, ty, text, small)
        if i % label_every == 0:
            cx = left + (i + 0.5) * slot
            draw.line([(cx, bottom), (cx, bottom + 3)], fill=INK)
            centered_text(draw, cx, bottom + 5, f"{s:.3g}", small)
    draw.line([(left, zero), (right, zero)], fill=INK, width=1)
    draw.line([(left, top), (left, bottom)], fill=INK)
    centered_text(draw, (left + right) / 2, height - 20, caption, small)
    return img


def schedule_chart(stock_sigmas, fitted_sigmas=None, title="sigma per step (log scale)", width=480, height=300):
    """σ_i against the step index i on a log scale: the stock grid (grey) and, if given, the fitted one (blue).

    Both grids are plain 1-D sequences of the same length; a final σ = 0 has no place on a log axis and is left out
    (the caption says so)."""
    grids = [("stock", floats(stock_sigmas), STOCK)]
    if fitted_sigmas is not None:
        grids.append(("fitted", floats(fitted_sigmas), FITTED))
    if len({len(g) for _, g, _ in grids}) != 1:
        raise ValueError(f"the stock and fitted σ grids must have the same length, got {[len(g) for _, g, _ in grids]}")
    positive = [s for _, g, _ in grids for s in g if s > 0]
    if not positive:
        raise ValueError("a σ schedule chart needs at least one σ > 0")
    small, normal = font(11), font(13)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    top = header(draw, width, title, "", normal)
    powers = decades(positive)
    labels = [f"{10.0 ** k:g}" for k in powers]
    left = 16 + max(text_width(draw, t, small) for t in labels)
    right, bottom = width - 16, height - 44
    lo, hi = powers[0], powers[-1]

    def y_of(k):  # k = log10 σ
        return bottom - (k - lo) / (hi - lo) * (bottom - top)

    y_axis(draw, powers, labels, y_of, left, right, small)
    steps = max(sum(s > 0 for s in g) for _, g, _ in grids)  # only positive σ have a place (0 comes last)
    slot = (right - left) / steps

    def x_of(i):
        return left + (i + 0.5) * slot

    for i in range(steps):
        draw.line([(x_of(i), bottom), (x_of(i), bottom + 3)], fill=INK)
        centered_text(draw, x_of(i), bottom + 5, str(i), small)
    for _, grid, colour in grids:
        points = [(x_of(i), y_of(math.log10(s))) for i, s in enumerate(grid) if s > 0]
        draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=colour)
    draw.line([(left, top), (left, bottom)], fill=INK)
    legend_x = right
    for name, _, colour in reversed(grids):  # the legend, right-aligned on the title line (never over the data)
        w = text_width(draw, name, small)
        draw.text((legend_x - w, 11), name, fill=INK, font=small)
        draw.line([(legend_x - w - 22, 18), (legend_x - w - 6, 18)], fill=colour, width=3)
        legend_x -= w + 36
    final_zero = any(g[-1] == 0 for _, g, _ in grids)
    caption = "step i (sigma_i it starts from" + ("; the final sigma = 0 is not shown)" if final_zero else ")")
    centered_text(draw, (left + right) / 2, height - 20, caption, small)
    return img


def digit_grid(images, rows, cols, zoom=5, gap=3):
    """The first rows × cols images as one grid: each (H, W) image upscaled ``zoom``× (nearest-neighbour) into a
    square-pixel cell, ``gap`` light pixels apart. ``images`` is (B, H, W) or (B, 1, H, W) in [-1, 1], +1 = ink
    (drawn dark on white, like the digits data)."""
    images = torch.as_tensor(images).detach().float().cpu()
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[0] < rows * cols:
        raise ValueError(f"need at least {rows * cols} images of shape (H, W) or (1, H, W), got {tuple(images.shape)}")
    h, w = images.shape[1:]
    grey = ((1 - images[: rows * cols].clamp(-1, 1)) * 127.5).round().to(torch.uint8)
    canvas = Image.new("RGB", (cols * w * zoom + (cols - 1) * gap, rows * h * zoom + (rows - 1) * gap), GAP)
    for k in range(rows * cols):
        cell = Image.frombytes("L", (w, h), bytes(grey[k].flatten().tolist()))
        cell = cell.resize((w * zoom, h * zoom), Image.NEAREST).convert("RGB")
        canvas.paste(cell, ((k % cols) * (w * zoom + gap), (k // cols) * (h * zoom + gap)))
    return canvas


def labelled_rows(rows, label_width=240, spacing=12):
    """Image strips stacked with a label column on their left: ``rows`` is ``[(heading, subheading, image)]``."""
    mid, small = font(16), font(13)
    width = label_width + max(image.width for _, _, image in rows)
    height = sum(image.height for _, _, image in rows) + spacing * (len(rows) - 1)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    y = 0
    for heading, subheading, image in rows:
        mid_y = y + image.height / 2
        draw.text((0, mid_y - 20), heading, fill=INK, font=mid)
        draw.text((0, mid_y + 2), subheading, fill=MUTED, font=small)
        img.paste(image, (label_width, y))
        y += image.height + spacing
    return img


def compare_figure(title, body, charts=(), note="", margin=20, spacing=24):
    """One figure: ``title``, the image ``body``, then ``charts`` side by side below it, then ``note`` (small text,
    one line per string)."""
    big, small = font(20), font(12)
    notes = [note] if isinstance(note, str) and note else list(note or ())
    chart_w = sum(c.width for c in charts) + spacing * max(len(charts) - 1, 0)
    width = max(body.width, chart_w) + 2 * margin
    chart_h = max((c.height for c in charts), default=0)
    height = margin + 40 + body.height + (spacing + chart_h if charts else 0) + 18 * len(notes) + 8 + margin
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((margin, margin), title, fill=INK, font=big)
    img.paste(body, (margin, margin + 40))
    x, y = margin + (width - 2 * margin - chart_w) // 2, margin + 40 + body.height + spacing
    for chart in charts:
        img.paste(chart, (x, y))
        x += chart.width + spacing
    for k, line in enumerate(notes):
        draw.text((margin, height - margin - 18 * (len(notes) - k)), line, fill=MUTED, font=small)
    return img


def distill_plot(sampler, steps, lambdas, sigmas, rmse_stock, rmse_dode, teacher=None, scale=None,
                 caption="sigma the network is evaluated at  (bars: lambda)"):
    """The Distill λ node's chart as a ComfyUI IMAGE: λ per evaluation over ``sigmas`` (described by ``caption``),
    titled with sampler, steps and the stock → D-ODE RMSE to the teacher."""
    title = f"D-ODE lambda per evaluation: {sampler}, {steps} steps"
    if teacher:
        title += f" (teacher {teacher}" + (f" x{scale})" if scale else ")")

    def fmt(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"

    subtitle = f"RMSE to teacher: stock {fmt(rmse_stock)} -> D-ODE {fmt(rmse_dode)}"
    return to_image_tensor(lambda_chart(lambdas, sigmas, title=title, subtitle=subtitle, caption=caption))
