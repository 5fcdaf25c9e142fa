"""The demo, the benchmark and `show` on the embedded tiny digits model (small batches)."""
import json

import pytest

import dode
from dode.bench import run_bench, steps_for_nfe, write_json
from dode.cli import main
from dode.demo import MODEL_ID, run_demo


def test_demo_fits_saves_and_beats_stock(tmp_path):
    result = run_demo(str(tmp_path), "euler", 5, fit_batch=64, eval_batch=256, log=lambda *a: None)
    entry, = dode.load_lambdas(result["lambda_file"])
    assert (entry.sampler, entry.steps, entry.model) == ("euler", 5, MODEL_ID)
    rows = result["rows"]
    assert rows["D-ODE"]["rmse_teacher"] < 0.9 * rows["stock"]["rmse_teacher"]
    assert rows["D-ODE"]["fd"] < 0.5 * rows["stock"]["fd"]
    assert (tmp_path / "demo_euler5.png").stat().st_size > 10_000


def test_show_prints_entries_and_rejects_bad_files(tmp_path, capsys):
    path = run_demo(str(tmp_path), "dpmpp_2m", 4, fit_batch=16, eval_batch=64, log=lambda *a: None)["lambda_file"]
    main(["show", path])
    assert "dpmpp_2m, 4 steps" in capsys.readouterr().out
    (tmp_path / "bad.safetensors").write_text("junk")
    with pytest.raises(SystemExit, match="not a readable safetensors file"):
        main(["show", str(tmp_path / "bad.safetensors")])


def test_steps_for_nfe_respects_the_budget():
    assert [steps_for_nfe("euler", b) for b in (4, 5, 10)] == [4, 5, 10]
    assert [steps_for_nfe("heun", b) for b in (4, 5, 6, 10)] == [2, 3, 3, 5]


def test_bench_rows_and_json(tmp_path):
    result = run_bench(["euler", "heun"], [5, 6], fit_batch=32, eval_batch=64, log=lambda *a: None)
    assert [(r["sampler"], r["nfe"]) for r in result["rows"]] == [("euler", 5), ("euler", 6), ("heun", 5)]
    euler5 = result["rows"][0]
    assert euler5["rmse_dode"] < euler5["rmse_stock"] and euler5["fd_dode"] < euler5["fd_stock"]
    write_json(result, tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["lambdas"] == euler5["lambdas"]


def test_alignment_ablation_fits_one_lambda_per_evaluation():
    from dode.benchmarks.alignment import index_matched_lambdas
    from dode.bench import grid, noise
    from dode.testbed import load_tiny_model
    lambdas = index_matched_lambdas(load_tiny_model(), noise(8, 0), grid(3), "heun", 2)
    assert len(lambdas) == dode.nfe("heun", grid(3)) and lambdas[0] == 0 and lambdas.abs().sum() > 0
