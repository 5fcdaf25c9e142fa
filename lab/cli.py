"""Command line: python -m dode demo | bench | show."""
import argparse
import os
import sys

import torch

from ..lambdas import (DEFAULT_FIRST_STEP, DEFAULT_OBJECTIVE, DEFAULT_SCALE, DEFAULT_TEACHER, OBJECTIVES,
                      LambdaFileError, load_lambdas)
from ..samplers import SAMPLER_NAMES

DESCRIPTION = "D-ODE samplers: distill λ on the embedded tiny digits model, benchmark them, inspect λ files."
EPILOG = """examples:
  python -m dode demo                          # Euler, 5 steps: fit λ, save it, compare (table + PNG in dode_demo/)
  python -m dode bench --samplers euler --nfe 5 10
  python -m dode show dode_demo/tiny_edm_digits.euler5.dode.safetensors"""
SAMPLERS = ", ".join(SAMPLER_NAMES)


def add_fit_options(parser, scale=True):
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, choices=SAMPLER_NAMES, metavar="NAME",
                        help=f"sampler that makes the many-step targets λ is fitted to (one of {SAMPLERS}; "
                             "default: %(default)s)")
    if scale:
        parser.add_argument("--scale", type=int, default=DEFAULT_SCALE,
                            help="teacher sub-steps per student interval (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: %(default)s, the fastest on a loaded 2-core box)")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m dode", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,bench,show}")
    demo = sub.add_parser("demo", help="distill λ on the embedded tiny digits model and compare (table + PNG)",
                          description="Fits λ (and the σ schedule) for one sampler on 256 latents, saves and reloads "
                                      "the λ file, samples 2000 held-out latents stock / D-ODE / teacher, prints FD and "
                                      "RMSE, and draws the comparison figure.")
    demo.add_argument("--sampler", default="euler", choices=SAMPLER_NAMES, metavar="NAME",
                      help=f"sampler to distill (one of {SAMPLERS}; default: %(default)s)")
    demo.add_argument("--steps", type=int, default=5,
                      help="sampling steps on the Karras grid from σ = 80 to 0.002, then 0 (default: %(default)s)")
    demo.add_argument("--objective", default=DEFAULT_OBJECTIVE, choices=OBJECTIVES,
                      help="final: fit λ to the teacher's final sample; greedy: the paper's step-by-step fit "
                           "(default: %(default)s)")
    demo.add_argument("--schedule", default="fitted", choices=["fitted", "given"],
                      help="fitted: also fit the interior σ's of the grid (needs --objective final); given: keep the "
                           "Karras grid (default: %(default)s)")
    demo.add_argument("--out", default="dode_demo", help="folder for the λ file and the PNG (default: %(default)s)")
    add_fit_options(demo)
    bench = sub.add_parser("bench", help="stock vs D-ODE table over samplers and NFE budgets (JSON + table)",
                           description="For each sampler and network-evaluation budget: fits λ on 256 latents, then "
                                       "judges stock, D-ODE and the teacher on held-out latents (FD to real digits, "
                                       "RMSE to the converged ODE).")
    bench.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES), choices=SAMPLER_NAMES, metavar="NAME",
                       help=f"samplers to benchmark (any of {SAMPLERS}; default: all)")
    bench.add_argument("--nfe", nargs="+", type=int, default=[4, 5, 6, 8, 10], metavar="N",
                       help="network-evaluation budgets; two-evaluation samplers (heun, dpmpp_2s) take the most "
                            "steps that fit (default: 4 5 6 8 10)")
    bench.add_argument("--fit-batch", type=int, default=256, help="latents λ is fitted on (default: %(default)s)")
    bench.add_argument("--eval-batch", type=int, default=2000,
                       help="held-out latents each row is judged on (default: %(default)s)")
    bench.add_argument("--json", default="bench.json",
                       help="where to write every row and its λ as JSON (default: %(default)s)")
    bench.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="the network's precision (CPU autocast; the sampler stays float32; default: %(default)s)")
    bench.add_argument("--seeds", type=int, default=1, choices=range(1, 6), metavar="N",
                       help="fit batches the schedule fit is made on, 1 to 5 (its worst FD is reported; "
                            "default: %(default)s)")
    bench.add_argument("--fits", nargs="+", default=["greedy", "final", "schedule"],
                       choices=["greedy", "final", "schedule"], help="which fits to run (default: all)")
    add_fit_options(bench, scale=False)
    bench.add_argument("--first-step", default=DEFAULT_FIRST_STEP, choices=["none", "x"],
                       help="none: the first evaluation keeps λ = 0 (it has no previous output); x: fit it against "
                            "the initial state (default: %(default)s)")
    show = sub.add_parser("show", help="print the entries of a λ file",
                          description="Prints each entry of a λ file: model, sampler, steps, σ grid, λ, teacher.")
    show.add_argument("path", help="a .dode.safetensors λ file")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "show":
        return show(args.path)
    torch.set_num_threads(args.threads)
    if args.command == "demo":
        from .demo import run_demo
        if args.schedule == "fitted" and args.objective != "final":
            parser.error("--schedule fitted fits the grid to the teacher's final sample: use --objective final, or "
                         "--schedule given")
        run_demo(args.out, args.sampler, args.steps, args.teacher, args.scale, args.objective,
                 args.schedule == "fitted")
    else:
        from .bench import run_bench
        from .protocol import write_json
        result = run_bench(args.samplers, args.nfe, args.teacher, args.first_step, fit_batch=args.fit_batch,
                           eval_batch=args.eval_batch, dtype=args.dtype, seeds=args.seeds, fits=tuple(args.fits))
        write_json(result, args.json)
        print(f"wrote {os.path.abspath(args.json)}")
