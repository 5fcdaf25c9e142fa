"""The demo, the benchmark and `show` on the embedded tiny digits model (small batches)."""
import ast
import json
import os
from pathlib import Path

import pytest
import torch

import dode
from dode.lab.bench import format_row, run_bench
from dode.lab.protocol import autocast_model, grid, noise, steps_for_nfe, write_json
from dode.lab.cli import build_parser, main
from dode.lab.demo import MODEL_ID, run_demo
from dode.lab.testbed import load_tiny_model


def test_demo_fits_saves_and_beats_stock(tmp_path):
    lines = []
    result = run_demo(str(tmp_path), "euler", 5, fit_batch=64, eval_batch=256, log=lines.append)
    entry, = dode.load_lambdas(result["lambda_file"])
    assert (entry.sampler, entry.steps, entry.model) == ("euler", 5, MODEL_ID)
    assert entry.lambdas.tolist() == result["lambdas"]
    stock = grid(5).double()  # the default fit moves the interior σ's and keeps the first and the last
    assert (entry.schedule, entry.objective) == ("fitted", "final")
    assert entry.sigmas[0] == stock[0] and entry.sigmas[-1] == 0 and not torch.allclose(entry.sigmas, stock)
    rows = result["rows"]
    assert rows["D-ODE"]["rmse_teacher"] < 0.9 * rows["stock"]["rmse_teacher"]
    assert rows["D-ODE"]["fd"] < 0.5 * rows["stock"]["fd"]
    printed = "\n".join(lines)  # says where the λ file and the figure went
    assert f"λ file: {os.path.abspath(result['lambda_file'])}" in printed
    assert f"figure: {os.path.abspath(tmp_path / 'demo_euler5.png')}" in printed
    PIL = pytest.importorskip("PIL.Image", reason="reading the figure back needs Pillow")
    with PIL.open(tmp_path / "demo_euler5.png") as figure:
        assert figure.width >= 900 and 400 <= figure.height <= figure.width


def test_show_prints_entries_and_rejects_bad_files(tmp_path, capsys):
    path = run_demo(str(tmp_path), "dpmpp_2m", 4, objective="greedy", schedule=False, fit_batch=16, eval_batch=64,
                    log=lambda *a: None)["lambda_file"]
    entry, = dode.load_lambdas(path)
    assert (entry.schedule, entry.objective) == ("given", "greedy") and torch.equal(entry.sigmas, grid(4).double())
    main(["show", path])
    out = capsys.readouterr().out
    assert out.startswith(f"entry 0: {entry.describe()}\n") and f"model {MODEL_ID}" in out
    assert f"teacher {entry.teacher}×{entry.scale}, first step {entry.first_step}" in out
    printed = {line.split(" = ")[0].strip(): ast.literal_eval(line.split(" = ")[1])
               for line in out.splitlines() if " = [" in line}
    assert printed["λ"] == pytest.approx(entry.lambdas.tolist(), abs=5e-5)
    assert printed["σ"] == pytest.approx(entry.sigmas.tolist(), abs=5e-5) and len(printed["σ"]) == 5
    (tmp_path / "bad.safetensors").write_text("junk")
    with pytest.raises(SystemExit, match="not a readable safetensors file"):
        main(["show", str(tmp_path / "bad.safetensors")])
    with pytest.raises(SystemExit, match="no such λ file"):
        main(["show", str(tmp_path / "missing.safetensors")])


def test_help_is_plain_text_and_every_option_says_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "python -m dode demo" in top
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("demo", "bench"):
        options = [a for a in commands[name]._actions if a.option_strings and a.dest != "help"]
        assert len(options) >= 5
        for action in options:
            assert action.help and "default" in action.help, f"{name} {action.option_strings[0]} lacks help/default"
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "%(default)" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--objective", "greedy"])  # a fitted schedule needs the final objective: refused before any work
    assert "use --objective final, or --schedule given" in capsys.readouterr().err


def test_steps_for_nfe_respects_the_budget():
    assert [steps_for_nfe("euler", b) for b in (4, 5, 10)] == [4, 5, 10]
    assert [steps_for_nfe("heun", b) for b in (4, 5, 6, 10)] == [2, 3, 3, 5]


def test_bench_rows_and_json(tmp_path):
    result = run_bench(["euler", "heun"], [5, 6], fit_batch=32, eval_batch=64, log=lambda *a: None)
    assert [(r["sampler"], r["nfe"]) for r in result["rows"]] == [("euler", 5), ("euler", 6), ("heun", 5)]
    euler5 = result["rows"][0]
    for fit in ("greedy", "final", "schedule"):  # every fit ends closer to the ODE than stock Euler 5 (64 samples
        assert euler5[fit]["rmse"] < euler5["stock"]["rmse"], fit  # are too few for a meaningful FD)
    for fit in ("final", "schedule"):
        assert euler5[fit]["rmse_fit"] < euler5[fit]["rmse_fit_stock"], fit
    assert euler5["schedule"]["rmse"] < 0.7 * euler5["final"]["rmse"]
    assert euler5["schedule"]["sigmas"][0] == 80 and euler5["schedule"]["sigmas"][-1] == 0
    assert euler5["schedule"]["sigmas"] != pytest.approx(grid(5).tolist())
    assert euler5["final"]["network_rows"] <= 3 * euler5["greedy"]["network_rows"]
    assert euler5["schedule"]["network_rows"] <= 6 * euler5["greedy"]["network_rows"]
    line = format_row(euler5, result["fd_converged"])
    assert line.startswith("| euler     |   5 |") and f"{euler5['schedule']['fd']:.2f}" in line
    write_json(result, tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["schedule"]["lambdas"] == \
        euler5["schedule"]["lambdas"]


def test_bench_in_half_precision_on_more_fit_batches_with_one_fit():
    """--dtype runs the network under CPU autocast against the float32 reference; --seeds refits the schedule on more
    batches (the first is the bench's own fit); --fits leaves the others out, and the table shows them as "-"."""
    result = run_bench(["euler"], [5], fit_batch=8, eval_batch=32, log=lambda *a: None, dtype="bfloat16", seeds=2,
                       fits=("schedule",))
    row = result["rows"][0]
    assert result["dtype"] == "bfloat16" and result["fit_seeds"] == [0, 20] and "greedy" not in row
    assert len(row["schedule_seeds"]) == 2 and row["schedule_seeds"][0]["fd"] == row["schedule"]["fd"]
    assert row["schedule"]["noise_floor"] > 1e-4  # bfloat16 rounding, measured
    line = format_row(row, result["fd_converged"])
    worst = max(s["fd"] for s in row["schedule_seeds"]) / result["fd_converged"]
    assert f"{worst:.2f}" in line and line.count(" - ") >= 4
    with pytest.raises(ValueError, match="seeds must be 1 to 5"):
        run_bench(["euler"], [5], seeds=6, log=lambda *a: None)


def test_autocast_model_rounds_the_network_and_returns_float32():
    tiny = load_tiny_model()
    x, sigma = noise(4, 3), torch.full((4,), 2.0)
    half = autocast_model(tiny, "bfloat16")(x, sigma)
    assert half.dtype == torch.float32 and not torch.equal(half, tiny(x, sigma))
    assert torch.allclose(half, tiny(x, sigma), atol=0.05) and autocast_model(tiny, "float32") is tiny


def test_alignment_ablation_fits_against_the_teacher_state_at_its_index():
    """The official (index-matched) targets: an Euler teacher on Karras(scale × NFE) and target j at teacher index
    (j + 1)·scale, fitted greedily: λ_j = ⟨T_j − a_j, b_j⟩/⟨b_j, b_j⟩ with a_j the stock Euler step and
    b_j = (σ_j − σ_{j+1})/σ_j · (D_j − D_{j−1}); λ_0 = 0."""
    from dode.lab.benchmarks.alignment import index_matched_lambdas
    from dode.lab.protocol import noise
    from dode.samplers import karras_sigmas
    from dode.lab.testbed import SIGMA_MAX, SIGMA_MIN, load_tiny_model
    model, x, sigmas, scale = load_tiny_model(torch.float64), noise(8, 0).double(), grid(3).double(), 2
    states = []
    teacher = karras_sigmas(scale * 3, SIGMA_MIN, SIGMA_MAX).double()
    states.append(dode.sample(model, x, teacher, "euler", callback=lambda d: states.append(d["x"]), disable=True))
    assert len(states) == scale * 3 + 1  # the callback's states x_0 … x_5, then the final sample
    expected, prev, ones = [], x, torch.ones(len(x), dtype=torch.float64)
    for j in range(3):
        d = model(x, sigmas[j] * ones)
        a = x + (sigmas[j + 1] - sigmas[j]) * (x - d) / sigmas[j]
        b = (sigmas[j] - sigmas[j + 1]) / sigmas[j] * (d - prev)
        lam = 0.0 if j == 0 else float(((states[(j + 1) * scale] - a) * b).sum() / (b * b).sum())
        expected.append(lam)
        x, prev = a + lam * b, d
    got = index_matched_lambdas(model, noise(8, 0).double(), sigmas, "euler", scale)
    assert got.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert abs(expected[1]) > 1e-3 and abs(expected[2]) > 1e-3


def test_benchmarks_demo_table_is_what_the_demo_prints(tmp_path):
    """The demo table of docs/benchmarks.md is the default demo's output (the full fit and held-out batches)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    table = page.split("| RMSE to teacher |\n", 1)[1].split("\n\n", 1)[0]
    quoted = {cells[0]: (float(cells[1]), float(cells[2]))
              for cells in ([c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines())}
    rows = run_demo(str(tmp_path), log=lambda *a: None)["rows"]
    assert set(quoted) == set(rows)
    for name, (fd, rmse) in quoted.items():
        assert rows[name]["fd"] == pytest.approx(fd, abs=0.02)
        assert rows[name]["rmse_teacher"] == pytest.approx(rmse, abs=2e-4)
