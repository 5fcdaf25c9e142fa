"""lambdas/progress.py: one count over a fit's phases, and a fit's cost in generations."""
import pytest
import torch

import dode
from dode.lambdas.progress import FIT_UNITS, FitProgress, fit_generations, fit_phases
from dode.lambdas.teacher import greedy_rows
from dode.samplers import karras_sigmas


def test_phases_follow_what_distill_reports():
    assert fit_phases("final") == ("teacher", "fit")
    assert fit_phases("greedy") == ("teacher", "student")
    assert fit_phases("greedy", compare_stock=True) == ("teacher", "stock", "student")


def test_one_count_over_the_phases_never_goes_back():
    count = FitProgress(5, ("teacher", "fit"))
    assert count.total() == 5 + FIT_UNITS  # the teacher's length is not known before its first report
    assert count.update({"phase": "teacher", "i": 0, "total": 40}) == (1, 40 + FIT_UNITS)
    assert count.update({"phase": "teacher", "i": 39, "total": 40}) == (40, 40 + FIT_UNITS)
    assert count.update({"phase": "fit", "i": 500, "total": 1000}) == (40 + 50, 40 + FIT_UNITS)
    assert count.update({"phase": "fit", "i": 100, "total": 1000}) == (90, 140)  # never back
    assert count.update({"phase": "fit", "i": 5000, "total": 1000}) == (140, 140)  # never past the end


def test_a_greedy_fit_counts_its_student_after_its_teacher():
    count = FitProgress(5, fit_phases("greedy"))
    count.update({"phase": "teacher", "i": 49, "total": 50})
    assert count.update({"phase": "student", "i": 2, "total": 5}) == (53, 55)


def test_the_counts_follow_a_real_fit_to_its_end(gmm):
    x, sigmas = torch.randn(4, 64) * 80, karras_sigmas(4)
    for objective in ("greedy", "final"):
        count, seen = FitProgress(4, fit_phases(objective)), []
        dode.distill(gmm, x, sigmas, "euler", objective=objective, scale=4, disable=True,
                     callback=lambda d: seen.append(count.update(d)))
        done = [d for d, _ in seen]
        assert done == sorted(done) and len({t for _, t in seen[-3:]}) == 1 and 0 < done[-1] <= seen[-1][1]


def test_fit_generations_is_the_fits_rows_over_one_generations():
    x, sigmas = torch.zeros(4, 64), karras_sigmas(5)
    generation = 5 * 4
    assert fit_generations(x, sigmas, "euler", "dpmpp_2m", "final") == pytest.approx(
        2.5 * greedy_rows(x, sigmas, "euler", "dpmpp_2m", False) / generation)
    assert fit_generations(x, sigmas, "euler", "dpmpp_2m", "final", schedule=True) == pytest.approx(
        6.0 * greedy_rows(x, sigmas, "euler", "dpmpp_2m", False) / generation)
    teacher = dode.nfe("dpmpp_2m", dode.lambdas.teacher_grid(sigmas, sigmas, 10))  # Euler lands on its own grid
    assert fit_generations(x, sigmas, "euler", "dpmpp_2m", "greedy") == pytest.approx(teacher / 5 + 1)
