"""Command line: ``python -m dode demo | bench | show``."""
import argparse
import os
import sys

import torch

from .lambdas import DEFAULT_FIRST_STEP, DEFAULT_SCALE, DEFAULT_TEACHER, LambdaFileError, load_lambdas
from .samplers import SAMPLER_NAMES


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m dode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="distill λ on the embedded tiny digits model and compare (table + PNG)")
    demo.add_argument("--sampler", default="euler", choices=SAMPLER_NAMES)
    demo.add_argument("--steps", type=int, default=5)
    demo.add_argument("--out", default="dode_demo", help="folder for the λ file and the PNG")
    bench = sub.add_parser("bench", help="stock vs D-ODE table over samplers and NFE budgets (JSON + table)")
    bench.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES), choices=SAMPLER_NAMES)
    bench.add_argument("--nfe", nargs="+", type=int, default=[4, 5, 6, 8, 10])
    bench.add_argument("--eval-batch", type=int, default=2000)
    bench.add_argument("--json", default="bench.json")
    for p in (demo, bench):
        p.add_argument("--teacher", default=DEFAULT_TEACHER, choices=SAMPLER_NAMES)
        p.add_argument("--scale", type=int, default=DEFAULT_SCALE)
        p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core box)")
    bench.add_argument("--first-step", default=DEFAULT_FIRST_STEP, choices=["none", "x"])
    show = sub.add_parser("show", help="print the entries of a λ file")
    show.add_argument("path")
    return parser


def show(path):
    try:
        entries = load_lambdas(path)
    except LambdaFileError as e:
        sys.exit(f"error: {e}")
    for k, e in enumerate(entries):
        aliases = f"\n  also this model: {', '.join(e.aliases)}" if e.aliases else ""
        print(f"entry {k}: {e.describe()}{aliases}\n  teacher {e.teacher}×{e.scale}, first step {e.first_step}, "
              f"created {e.created}, dode {e.dode_version}\n  λ = {[round(v, 4) for v in e.lambdas.tolist()]}\n"
              f"  σ = {[round(v, 4) for v in e.sigmas.tolist()]}\n  metrics {e.metrics}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "show":
        return show(args.path)
    torch.set_num_threads(args.threads)
    if args.command == "demo":
        from .demo import run_demo
        run_demo(args.out, args.sampler, args.steps, args.teacher, args.scale)
    else:
        from .bench import run_bench, write_json
        result = run_bench(args.samplers, args.nfe, args.teacher, args.scale, args.first_step,
                           eval_batch=args.eval_batch)
        write_json(result, args.json)
        print(f"wrote {os.path.abspath(args.json)}")
