"""The README's schedule figure: fitted σ schedules next to the stock Karras grid, read from a bench JSON.

    python -m dode.lab.benchmarks.schedules docs/bench.json docs/schedules.png
"""
import json
import sys

from PIL import Image

from ..protocol import grid
from ...plot import BACKGROUND, schedule_chart

SHOWN = (("euler", 5), ("dpmpp_2m", 5), ("euler", 10))


def schedules_figure(result, shown=SHOWN, spacing=16):
    """One row of schedule charts, one per (sampler, NFE) in ``shown``, titled with the FDs they gave."""
    rows = {(r["sampler"], r["nfe"]): r for r in result["rows"]}
    charts = []
    for sampler, nfe in shown:
        row = rows[(sampler, nfe)]
        title = (f"{sampler}, {row['steps']} steps: FD {row['stock']['fd']:.2f} stock, "
                 f"{row['schedule']['fd']:.2f} fitted")
        charts.append(schedule_chart(grid(row["steps"]).tolist(), row["schedule"]["sigmas"], title=title))
    figure = Image.new("RGB", (sum(c.width for c in charts) + spacing * (len(charts) - 1),
                               max(c.height for c in charts)), BACKGROUND)
    x = 0
    for chart in charts:
        figure.paste(chart, (x, 0))
        x += chart.width + spacing
    return figure


def main(argv=None):
    source, target = (argv or sys.argv[1:]) or ("bench.json", "schedules.png")
    with open(source) as f:
        schedules_figure(json.load(f)).save(target, optimize=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
