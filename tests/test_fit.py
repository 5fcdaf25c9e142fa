"""Closed-form λ distillation: noise-level-aligned teacher, exact least squares, guards and errors."""
import pytest
import torch

import dode
from dode.lambdas import teacher_grid
from dode.samplers import get_solver, karras_sigmas


def noise(batch, seed, sigma_max=80.0, dim=64):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed)) * sigma_max


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_teacher_grid_refines_every_interval_and_contains_every_landing(sampler):
    sigmas = karras_sigmas(6)
    landings = get_solver(sampler).landings(sigmas)
    grid = teacher_grid(sigmas, landings, 10)
    assert len(grid) == 10 * 6 + 1
    assert (grid[1:] < grid[:-1]).all()
    as_float = grid.float()
    for s in torch.cat([sigmas, landings]).tolist():
        assert (as_float == s).any(), f"σ={s} is not on the teacher grid"


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_fit_generalises_to_fresh_noise(gmm, sampler):
    sigmas = karras_sigmas(10) if sampler != "heun" else karras_sigmas(5)
    fit = dode.distill(gmm, noise(128, 1), sigmas, sampler, teacher="heun", scale=10, objective="greedy", disable=True)
    fresh = noise(128, 2)
    teacher = dode.sample(gmm, fresh, teacher_grid(sigmas, get_solver(sampler).landings(sigmas), 10), "heun",
                          disable=True)
    stock = (dode.sample(gmm, fresh, sigmas, sampler, disable=True) - teacher).square().mean()
    dode_ = (dode.sample(gmm, fresh, sigmas, sampler, lambdas=fit.lambdas, disable=True) - teacher).square().mean()
    assert dode_ < 0.7 * stock, (sampler, float(stock), float(dode_))
    assert fit.report.rmse_after < fit.report.rmse_before


def test_sampling_with_fitted_lambdas_reproduces_the_fit_exactly(gmm):
    sigmas, x = karras_sigmas(6), noise(16, 3)
    for sampler in ("euler", "heun", "dpmpp_2m"):
        fit = dode.distill(gmm, x, sigmas, sampler, scale=4, objective="greedy", disable=True)
        assert torch.equal(dode.sample(gmm, x, sigmas, sampler, lambdas=fit.lambdas, disable=True), fit.samples)


def test_lambda_is_the_exact_least_squares_minimiser(gmm):
    """On a 2-step Euler grid the final state is affine in λ_1, so the distance to the teacher is a parabola whose
    vertex, found from three plain sampling runs, must be the fitted λ_1."""
    sigmas, x = karras_sigmas(2, sigma_max=10.0), noise(32, 4, 10.0).double()
    model = lambda x, s: gmm(x.float(), s.float()).double()
    fit = dode.distill(model, x, sigmas.double(), "euler", teacher="euler", scale=20, objective="greedy", disable=True)

    def loss(lam):
        out = dode.sample(model, x, sigmas.double(), "euler", lambdas=[0.0, lam], disable=True)
        return (out - fit.teacher_samples).square().sum().item()

    l0, l1, lm = loss(0.0), loss(1.0), loss(-1.0)
    vertex = (lm - l1) / (2 * (l1 + lm - 2 * l0))
    assert fit.lambdas[0] == 0.0
    assert fit.lambdas[1].item() == pytest.approx(vertex, rel=1e-6)


def test_a_teacher_identical_to_the_student_gives_zero_lambda(gmm):
    sigmas, x = karras_sigmas(5), noise(8, 5)
    fit = dode.distill(gmm, x, sigmas, "euler", teacher="euler", scale=1, objective="greedy", disable=True)
    assert torch.equal(fit.lambdas, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(fit.samples, dode.sample(gmm, x, sigmas, "euler", disable=True))


def test_first_step_modes_and_clamp(gmm):
    """first_step="x" fits λ_0 with D_prev = x: the least-squares λ_0 = ⟨T − a, b⟩/⟨b, b⟩ of the first Euler step
    (a = the stock step, b = (σ_0 − σ_1)/σ_0 (D_0 − x), T = the teacher's state at σ_1); "none" keeps λ_0 = 0.
    clamp bounds |λ|: a λ over the bound becomes ±bound with its sign (and a warning naming it); a bound no λ
    reaches changes nothing."""
    sigmas, x, scale = karras_sigmas(3, sigma_max=1.0), noise(16, 6, sigma_max=1.0), 4
    skip = dode.distill(gmm, x, sigmas, "euler", scale=scale, objective="greedy", disable=True)
    fitted = dode.distill(gmm, x, sigmas, "euler", scale=scale, objective="greedy", first_step="x", disable=True)
    assert skip.lambdas[0] == 0
    grid = teacher_grid(sigmas, sigmas[1:], scale).float()
    states = []
    dode.sample(gmm, x, grid, "dpmpp_2m", callback=lambda d: states.append(d["x"]), disable=True)
    target = states[scale].double()  # grid[scale] == σ_1
    d0 = gmm(x, sigmas[0] * torch.ones(len(x))).double()
    s0, s1 = sigmas[0].double(), sigmas[1].double()
    a = x.double() + (s1 - s0) * (x.double() - d0) / s0
    b = (s0 - s1) / s0 * (d0 - x.double())
    lam0 = float(((target - a) * b).sum() / (b * b).sum())
    assert abs(lam0) > 1e-3 and fitted.lambdas[0].item() == pytest.approx(lam0, rel=1e-4)
    assert lam0 < 0 < skip.lambdas[1]
    bound = 0.5 * abs(lam0)
    clamped = dode.distill(gmm, x, sigmas, "euler", scale=scale, objective="greedy", first_step="x", clamp=bound,
                           disable=True)
    assert clamped.lambdas[0].item() == -bound and clamped.lambdas[1].item() == bound  # each keeps its sign
    assert clamped.lambdas.abs().max() <= bound
    assert [w.split(":")[0] for w in clamped.report.warnings if "clamped" in w][:2] == ["evaluation 0", "evaluation 1"]
    loose = 1.01 * fitted.lambdas.abs().max().item()  # a bound no λ reaches changes nothing
    unclamped = dode.distill(gmm, x, sigmas, "euler", scale=scale, objective="greedy", first_step="x", clamp=loose,
                             disable=True)
    assert torch.equal(unclamped.lambdas, fitted.lambdas) and not unclamped.report.warnings


def test_report_counts_calls_and_compares_with_stock(gmm):
    calls = []

    def model(x, s):
        calls.append(1)
        return gmm(x, s)

    sigmas = karras_sigmas(5)
    fit = dode.distill(model, noise(8, 7), sigmas, "heun", teacher="euler", scale=3, compare_stock=True, objective="greedy", disable=True)
    assert fit.report.teacher_nfe == 3 * 5
    assert fit.report.student_nfe == dode.nfe("heun", sigmas) == len(fit.lambdas) == len(fit.report.steps)
    assert len(calls) == fit.report.teacher_nfe + 2 * fit.report.student_nfe
    assert fit.report.rmse_after < fit.report.rmse_stock
    assert fit.report.network_calls == len(calls)
    assert fit.report.network_rows == 8 * len(calls)
    assert [row["sigma"] for row in fit.report.steps[:3]] == pytest.approx([80, float(sigmas[1]), float(sigmas[1])],
                                                                          rel=1e-6)
    assert f"stock {fit.report.rmse_stock:.5f} → D-ODE {fit.report.rmse_after:.5f}" in fit.report.table()


def test_progress_callback_reports_phases(gmm):
    seen = []
    dode.distill(gmm, noise(4, 8), karras_sigmas(3), "euler", scale=2, callback=seen.append, objective="greedy", disable=True)
    assert {s["phase"] for s in seen} == {"teacher", "student"}
    assert max(s["i"] for s in seen if s["phase"] == "teacher") == seen[0]["total"] - 1


def test_nan_output_gives_zero_lambda_and_a_warning(gmm):
    sigmas = karras_sigmas(4)
    teacher_calls = dode.nfe("heun", teacher_grid(sigmas, sigmas[1:], 2))
    calls = []

    def flaky(x, s):
        calls.append(1)
        student_call = len(calls) - teacher_calls
        return gmm(x, s) * (float("nan") if student_call in (2, 3) else 1.0)

    fit = dode.distill(flaky, noise(4, 9), sigmas, "euler", teacher="heun", scale=2, objective="greedy", disable=True)
    assert fit.lambdas[1] == 0 and fit.lambdas[2] == 0
    assert sum("NaN" in w for w in fit.report.warnings) >= 2


def test_degenerate_direction_gives_zero_lambda_and_a_warning():
    constant = lambda x, s: torch.zeros_like(x)
    fit = dode.distill(constant, noise(4, 10), karras_sigmas(4), "euler", scale=2, objective="greedy", disable=True)
    assert torch.equal(fit.lambdas, torch.zeros(4, dtype=torch.float64))
    assert any("direction is ~0" in w for w in fit.report.warnings)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=0), "scale must be an integer ≥ 1"),
    (dict(scale=2.5), "scale must be an integer ≥ 1"),
    (dict(teacher="rk4"), "unknown sampler 'rk4'"),
    (dict(sampler="ddpm"), "unknown sampler 'ddpm'"),
    (dict(first_step="prev"), "first_step must be one of"),
    (dict(clamp=-1), "clamp must be a positive bound"),
    (dict(sigmas=torch.tensor([80.0, 0.0])), "1 step.*at least 2"),
    (dict(sigmas=torch.tensor([1.0, 5.0, 0.0])), "strictly decreasing"),
    (dict(x=torch.zeros(0, 64)), "batch is empty"),
])
def test_bad_fit_arguments(gmm, kwargs, message):
    args = dict(x=noise(2, 0), sigmas=karras_sigmas(4), sampler="euler", disable=True)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        dode.distill(gmm, objective="greedy", **args)


def test_a_direction_tiny_next_to_the_step_gives_zero_lambda():
    """λ would have to be ~1e4 or more for such a direction to matter: the fit leaves it at 0 and says so."""
    from dode.lambdas.fit import FitReport, LambdaFit

    class Targets:
        def at(self, sigma):
            return torch.ones(4, 8)

    report = FitReport()
    fit = LambdaFit(Targets(), report)
    x, x_plain = torch.zeros(4, 8), torch.full((4, 8), 0.5)
    out, prev = torch.full((4, 8), 1e-6), torch.zeros(4, 8)
    assert torch.equal(fit(1, x, x_plain, 1.0, out, prev, 0.5), x_plain)
    assert fit.lambdas == [0.0] and "next to the step" in report.warnings[0]
    usable = LambdaFit(Targets(), FitReport())
    moved = usable(1, x, x_plain, 1.0, torch.full((4, 8), 1e-3), prev, 0.5)
    assert usable.lambdas[0] == pytest.approx(500.0) and torch.allclose(moved, torch.ones(4, 8))


def test_half_precision_latents_keep_the_teacher_grid_in_the_sigma_dtype(gmm):
    """fp16 latents must not round the teacher's σ grid: the teacher runs on the grid in the host's σ dtype."""
    model = lambda x, s: gmm(x.float(), s.float()).to(x.dtype)  # noqa: E731
    sigmas, x = karras_sigmas(4), noise(8, 11).half()
    fit = dode.distill(model, x, sigmas, "euler", teacher="dpmpp_2m", scale=3, objective="greedy", disable=True)
    grid = teacher_grid(sigmas, sigmas[1:], 3)
    assert torch.equal(fit.teacher_samples, dode.sample(model, x, grid.float(), "dpmpp_2m", disable=True))
    assert not torch.equal(fit.teacher_samples, dode.sample(model, x, grid.half(), "dpmpp_2m", disable=True))


def test_small_batch_advice_below_the_measured_batch_size_only():
    from dode.lambdas.fit import RELIABLE_LATENTS, small_batch
    assert RELIABLE_LATENTS == 16 and small_batch(16) is None and small_batch(256) is None
    assert small_batch(1).startswith("fitting on 1 latent; a fit on fewer than 16 may not hold")
    assert small_batch(4).startswith("fitting on 4 latents;") and "one fit in five" in small_batch(15)
