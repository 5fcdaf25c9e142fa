"""The final-sample fit (objective="final", schedule=True): guards, cost accounting, replay, schedule map, errors."""
import math

import pytest
import torch

import dode
from dode.lab.protocol import grid as digits_grid, noise as noise_digits
from dode.lambdas.calls import CountedModel, ReplayModel, Trajectory
from dode.lambdas import final
from dode.lambdas.final import FD_STEP, NOISE_BATCH, FinalFit, detail_norms, quadratic_noise
from dode.lambdas.grids import ScheduleMap, equidistributed_grid, start_grids
from dode.lambdas.teacher import greedy_rows
from dode.samplers import SAMPLER_NAMES, get_solver, karras_sigmas


def noise(batch, seed, sigma_max=80.0, dim=64):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed)) * sigma_max


def teacher_final(model, x, sigmas, fit):
    """The fit's target recomputed by hand: the teacher on the input grid refined ``fit.scale`` times."""
    grid = dode.lambdas.teacher_grid(sigmas, sigmas, fit.scale).to(sigmas.dtype)
    return dode.sample(model, x, grid, fit.teacher, disable=True)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_final_fit_never_ends_further_from_the_teacher_than_stock(gmm, sampler):
    x, sigmas = noise(8, 1), karras_sigmas(5)
    fit = dode.distill(gmm, x, sigmas, sampler, objective="final", scale=4, disable=True)
    target = teacher_final(gmm, x, sigmas, fit)
    stock = dode.sample(gmm, x, sigmas, sampler, disable=True)
    fitted = dode.sample(gmm, x, fit.sigmas.float(), sampler, lambdas=fit.lambdas, disable=True)
    rmse = lambda a: (a.double() - target.double()).square().mean().sqrt().item()
    assert rmse(fitted) < rmse(stock)  # strictly: an exact GMM always leaves room for λ
    assert fit.report.rmse_stock == pytest.approx(rmse(stock), rel=1e-6)
    assert fit.report.rmse_after == pytest.approx(rmse(fitted), rel=1e-5)
    assert torch.equal(fit.sigmas, sigmas.double()) and fit.schedule == "given" and fit.lambdas[0] == 0


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "dpmpp_3m", "heun"])
def test_schedule_fit_keeps_the_ends_and_beats_lambda_alone(gmm, sampler):
    """On the exact GMM (16 latents, mode-chaotic: which minimum a fit reaches moves with any detail of the search) the
    fitted schedule is always far below stock, and for Heun, whose stock grid fits worst, far below λ alone (measured:
    0.006 vs 0.37); the others end near λ alone's (Euler 0.12 vs 0.11, DPM++ 2M 0.16 vs 0.13, 3M 0.04 vs 0.09)."""
    x, sigmas = noise(16, 2), karras_sigmas(5)
    alone = dode.distill(gmm, x, sigmas, sampler, objective="final", scale=4, disable=True)
    fit = dode.distill(gmm, x, sigmas, sampler, schedule=True, scale=4, disable=True)
    assert fit.schedule == "fitted" and fit.objective == "final"
    assert fit.sigmas[0] == sigmas[0] and fit.sigmas[-1] == 0 and (fit.sigmas[1:] < fit.sigmas[:-1]).all()
    assert not torch.allclose(fit.sigmas, sigmas.double()) and torch.equal(fit.input_sigmas, sigmas.double())
    assert alone.report.rmse_after < alone.report.rmse_stock and fit.report.rmse_after < 0.6 * fit.report.rmse_stock
    if sampler == "heun":
        assert fit.report.rmse_after < 0.5 * alone.report.rmse_after
    assert len(fit.lambdas) == dode.nfe(sampler, fit.sigmas)


def test_a_fit_that_cannot_improve_returns_the_stock_sampler_with_a_warning(gmm):
    """With the student as its own teacher (scale 1) the stock run is the teacher: nothing is strictly closer."""
    x, sigmas = noise(4, 3), karras_sigmas(4)
    fit = dode.distill(gmm, x, sigmas, "euler", teacher="euler", scale=1, schedule=True, disable=True)
    assert fit.lambdas.tolist() == [0.0] * 4 and torch.equal(fit.sigmas, sigmas.double())
    assert fit.report.rmse_stock == 0 and fit.report.rmse_after == 0
    assert any("stock sampler" in w for w in fit.report.warnings)


def test_nan_from_the_model_never_reaches_lambda(gmm):
    """A model that returns NaN off the user's grid: every moved grid is rejected (L = inf), λ and σ stay finite."""
    sigmas = karras_sigmas(4)
    on_grid = set(sigmas.tolist())

    def picky(x, s):
        out = gmm(x, s)
        return out if float(s[0]) in on_grid or float(s[0]) < 0.01 else out * math.nan

    fit = dode.distill(picky, noise(4, 4), sigmas, "euler", teacher="euler", scale=1, schedule=True, disable=True)
    assert torch.isfinite(fit.lambdas).all() and torch.isfinite(fit.sigmas).all()
    assert torch.equal(fit.sigmas, sigmas.double())


def test_cost_is_counted_for_every_call_and_row(gmm):
    calls = []

    def model(x, s):
        calls.append(x.shape[0])
        return gmm(x, s)

    fit = dode.distill(model, noise(12, 5), karras_sigmas(5), "dpmpp_2m", schedule=True, scale=4, jacobian_batch=5,
                       disable=True)
    assert fit.report.network_calls == len(calls) and fit.report.network_rows == sum(calls)
    # Jacobians on sub-batches of 5, the noise floor on NOISE_BATCH latents, everything else on the whole batch
    assert {5, 12} <= set(calls) <= {5, 12, NOISE_BATCH}
    assert fit.report.teacher_nfe == 4 * 5


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "heun"])
@pytest.mark.parametrize("steps", [5, 10])
def test_final_fits_cost_at_most_3x_and_6x_the_greedy_fit(gmm, sampler, steps):
    x, sigmas = noise(16, 6), karras_sigmas(steps)
    greedy = dode.distill(gmm, x, sigmas, sampler, objective="greedy", disable=True).report.network_rows
    final = dode.distill(gmm, x, sigmas, sampler, objective="final", disable=True).report.network_rows
    schedule = dode.distill(gmm, x, sigmas, sampler, schedule=True, disable=True).report.network_rows
    assert final <= 3 * greedy and schedule <= 6 * greedy


def test_replay_answers_the_unchanged_head_bit_for_bit(gmm):
    """A rerun with λ_3 changed calls the network only from evaluation 4 on, and ends exactly where a plain run ends."""
    x, sigmas, solver = noise(6, 7), karras_sigmas(6), get_solver("dpmpp_3m")
    base, counted, first = Trajectory(), CountedModel(gmm), [0.0, 0.2, 0.1, 0, 0, 0]
    solver.fn(ReplayModel(counted, record=base, lambdas=first), x, sigmas, disable=True, lambdas=first)
    assert counted.calls == 6
    changed = [0.0, 0.2, 0.1, 0.5, 0, 0]
    replayed = solver.fn(ReplayModel(counted, replay=base, lambdas=changed), x, sigmas, disable=True, lambdas=changed)
    assert counted.calls == 6 + 2
    assert torch.equal(replayed, solver.fn(gmm, x, sigmas, disable=True, lambdas=changed))
    rows = torch.tensor([1, 4])
    trace = Trajectory()
    sub = solver.fn(ReplayModel(counted, replay=base, rows=rows, record=trace, lambdas=changed), x[rows], sigmas,
                    disable=True, lambdas=changed)
    assert counted.calls == 8 + 2 and counted.rows == 6 * 8 + 2 * 2
    assert torch.allclose(sub, replayed[rows], rtol=1e-5, atol=1e-5)
    again = solver.fn(ReplayModel(counted, replay=trace, rows=rows, lambdas=changed), x[rows], sigmas,
                      disable=True, lambdas=changed)  # a trace on rows answers runs on those rows
    assert counted.calls == 10 and torch.equal(again, sub)


def test_a_changed_earlier_lambda_is_never_replayed_even_if_the_input_looks_the_same(gmm):
    """λ_i reaches the calls after i only: a run whose λ_2 differs calls the network from call 3, whatever its
    inputs."""
    x, sigmas, solver = noise(4, 7), karras_sigmas(5), get_solver("euler")
    base, counted = Trajectory(), CountedModel(gmm)
    solver.fn(ReplayModel(counted, record=base, lambdas=[0.0] * 5), x, sigmas, disable=True, lambdas=[0.0] * 5)
    claimed = [0.0, 0.0, 1e-30, 0.0, 0.0]  # too small to change any input bit
    solver.fn(ReplayModel(counted, replay=base, lambdas=claimed), x, sigmas, disable=True, lambdas=claimed)
    assert counted.calls == 5 + 2


def test_the_input_fingerprint_catches_a_changed_input_that_sigma_and_lambda_do_not(gmm):
    """A solver that looked ahead (its input to call j changed with nothing before j changed) is not replayed."""
    x, sigma = noise(3, 1), torch.full((3,), 10.0)
    base, counted = Trajectory(), CountedModel(gmm)
    ReplayModel(counted, record=base)(x, sigma)
    ReplayModel(counted, replay=base)(x.clone(), sigma)
    assert counted.calls == 1
    nudged = x.clone()
    nudged[1, 5] = torch.nextafter(nudged[1, 5], torch.tensor(math.inf))
    ReplayModel(counted, replay=base)(nudged, sigma)
    swapped = x.clone()
    swapped[2, [0, 1]] = swapped[2, [1, 0]]
    ReplayModel(counted, replay=base)(swapped, sigma)
    assert counted.calls == 3


def test_a_fingerprint_is_taken_only_where_sigma_and_lambda_match_or_a_trace_keeps_it(gmm, monkeypatch):
    """A trace takes one per call; a rerun takes one per call whose σ and earlier λ match, and none once it is
    live."""
    from dode.lambdas import calls
    taken, plain = [], calls.fingerprint
    monkeypatch.setattr(calls, "fingerprint", lambda x: taken.append(1) or plain(x))
    x, sigmas, solver, stock = noise(4, 7), karras_sigmas(5), get_solver("euler"), [0.0] * 5
    base = Trajectory()
    solver.fn(ReplayModel(gmm, record=base, lambdas=stock), x, sigmas, disable=True, lambdas=stock)
    assert len(taken) == 5
    changed = [0.0, 0.0, 0.3, 0.0, 0.0]
    solver.fn(ReplayModel(gmm, replay=base, lambdas=changed), x, sigmas, disable=True, lambdas=changed)
    assert len(taken) == 5 + 3  # calls 0–2 match σ and the λ before them; call 3 does not, and the rest are live
    moved = sigmas.clone()
    moved[1] *= 0.9
    solver.fn(ReplayModel(gmm, replay=base, lambdas=stock), x, moved, disable=True, lambdas=stock)
    assert len(taken) == 5 + 3 + 1  # call 1's σ differs: call 0's fingerprint only


def test_a_fingerprint_is_exact_per_latent_in_any_batch_and_any_dtype():
    from dode.lambdas.calls import fingerprint
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        x = torch.randn(6, 3, 40, 50).to(dtype)
        whole = fingerprint(x)
        assert whole.dtype == torch.int64 and whole.shape == (6, 3)
        assert torch.equal(fingerprint(x[2:5]), whole[2:5]) and torch.equal(fingerprint(x[[4]]), whole[[4]])
        words = x.reshape(6, -1).contiguous().view(torch.int16).long()
        position = torch.arange(words.shape[1]) % 65521
        assert torch.equal(whole, torch.stack([words.sum(1), words.square().sum(1), (words * position).sum(1)], 1))


def test_a_model_output_of_the_wrong_shape_is_refused(gmm):
    with pytest.raises(ValueError, match="returned \\(4, 1\\) for an input of shape \\(4, 64\\)"):
        dode.distill(lambda x, s: gmm(x, s)[:, :1], noise(4, 8), karras_sigmas(3), "euler", disable=True)


def test_an_fp16_grid_keeps_the_teacher_grid_in_float32(gmm):
    seen = []

    def model(x, s):
        seen.append(s.dtype)
        return gmm(x.float(), s.float()).to(x.dtype)

    fit = dode.distill(model, noise(4, 9), karras_sigmas(4).half(), "euler", objective="greedy", disable=True)
    assert torch.float32 in seen and torch.isfinite(fit.lambdas).all()
    assert not any("NaN" in w for w in fit.report.warnings)


def test_a_schedule_fit_on_a_model_whose_output_never_moves_keeps_the_users_grid():
    """D(x, σ) = μ for every x and σ: the teacher's output never changes (no equidistributed grid to start from) and
    Euler is exact on any grid, so the fit keeps the stock sampler and says so."""
    mu = torch.linspace(-1, 1, 16)
    model = lambda x, sigma, **kwargs: mu.expand_as(x).clone()
    sigmas = karras_sigmas(4)
    fit = dode.distill(model, noise(4, 4, dim=16), sigmas, "euler", schedule=True, disable=True)
    assert torch.equal(fit.sigmas, sigmas.double()) and fit.lambdas.tolist() == [0.0] * 4
    assert any("stock sampler" in w for w in fit.report.warnings)


def test_schedule_map_is_the_grid_at_zero_and_monotone_inside_the_floor():
    sigmas = karras_sigmas(6, sigma_min=0.03, sigma_max=14.6)
    exact = ScheduleMap(sigmas)
    assert exact.exact and torch.allclose(exact.sigmas(torch.zeros(5, dtype=torch.float64)), sigmas.double(),
                                          rtol=1e-6)
    floored = ScheduleMap(sigmas, floor=float(sigmas[-2]))
    assert not floored.exact  # the last positive σ sits on the floor: the slack starts above 0
    torch.manual_seed(0)
    for u in torch.randn(20, 5, dtype=torch.float64) * 3:
        grid = floored.sigmas(u)
        assert grid[0] == sigmas[0] and grid[-1] == 0 and (grid[1:] < grid[:-1]).all()
        assert grid[-2] >= float(sigmas[-2]) * (1 - 1e-12)
    tail = torch.tensor([8.0, 3.0, 1.0, 0.5])  # a grid that does not end in 0 keeps its last σ
    grid = ScheduleMap(tail).sigmas(torch.tensor([0.5, -0.5], dtype=torch.float64))
    assert grid[0] == 8 and grid[-1] == 0.5 and (grid[1:] < grid[:-1]).all()


@pytest.mark.parametrize("floor", [0.0, 0.03])
def test_schedule_map_logits_invert_its_grids(floor):
    sigmas = karras_sigmas(6, sigma_min=0.03, sigma_max=14.6)
    schedule = ScheduleMap(sigmas, floor=floor)
    torch.manual_seed(1)
    for u in torch.randn(10, 5, dtype=torch.float64):
        assert torch.allclose(schedule.logits(schedule.sigmas(u)), u, atol=1e-9)
    tail = ScheduleMap(torch.tensor([8.0, 3.0, 1.0, 0.5]))
    u = torch.tensor([0.5, -0.5], dtype=torch.float64)
    assert torch.allclose(tail.logits(tail.sigmas(u)), u, atol=1e-9)


def test_equidistributed_grid_spreads_the_output_change_evenly():
    """Uniform change on a grid uniform in σ^(1/7) gives the Karras grid; change only in the lower half of the t-range
    puts every interior σ there; no change gives None."""
    teacher = karras_sigmas(41, 0.002, 80.0)[:-1].double()  # 40 intervals uniform in t, no final 0
    karras = karras_sigmas(5, 0.002, 80.0)[:-1].double()
    assert torch.allclose(equidistributed_grid(teacher, [1.0] * 40, 4), karras, rtol=1e-9)
    low = equidistributed_grid(teacher, [0.0] * 20 + [1.0] * 20, 4)
    assert low[0] == teacher[0] and low[-1] == teacher[-1] and (low[1:] < low[:-1]).all()
    assert (low[1:-1] < float(teacher[20])).all()
    with_zero = torch.cat([teacher, teacher.new_zeros(1)])  # the last interval, to 0, carries no change
    assert equidistributed_grid(with_zero, [1.0] * 40, 4)[-1] == 0
    assert equidistributed_grid(teacher, [0.0] * 40, 4) is None


def test_a_fitted_schedule_entry_is_found_by_its_range_and_by_its_grid(gmm, tmp_path):
    sigmas = karras_sigmas(4)
    fit = dode.distill(gmm, noise(8, 10), sigmas, "euler", schedule=True, scale=4, disable=True)
    path = dode.save_lambdas(tmp_path / "m.dode.safetensors", fit, model="m", cfg=4.5)
    entries = dode.load_lambdas(path)
    found = dode.find_schedule(entries, "euler", 4, 80.0, 0.0, model="m", cfg=4.5)
    assert found.schedule == "fitted" and found.objective == "final"
    assert torch.equal(found.sigmas, fit.sigmas) and torch.equal(found.lambdas, fit.lambdas)
    assert dode.find_lambdas(entries, "euler", fit.sigmas.float(), model="m", cfg=4.5) == found
    with pytest.raises(dode.LambdaNotFound):
        dode.find_lambdas(entries, "euler", sigmas, model="m", cfg=4.5)  # not valid for the user's own grid


@pytest.mark.parametrize("args, message", [
    ({"objective": "last"}, "objective must be one of 'final', 'greedy'"),
    ({"objective": "greedy", "schedule": True}, "schedule=True fits the σ grid to the final sample"),
    ({"sigmas": karras_sigmas(1), "schedule": True}, "a 1-step grid has none"),
    ({"sigma_range": (0.01, 40.0)}, "the model can use σ in \\[0.01, 40\\]"),
    ({"sigma_range": (5.0, 1.0)}, "sigma_range must be"),
    ({"budget": 0}, "budget must be a positive number"),
    ({"detail": -1.0}, "detail must be a finite weight ≥ 0"),
    ({"detail": math.inf}, "detail must be a finite weight ≥ 0"),
    ({"detail": 1.0, "objective": "greedy"}, "the greedy fit has none"),
])
def test_bad_fit_arguments_get_one_clear_error(gmm, args, message):
    kwargs = {"x": noise(2, 11), "sigmas": karras_sigmas(4), "sampler": "euler", "disable": True, **args}
    with pytest.raises(ValueError, match=message):
        dode.distill(gmm, **kwargs)


def test_sigma_range_keeps_a_fitted_grid_inside_the_models_range(gmm):
    sigmas = karras_sigmas(4, sigma_min=0.05, sigma_max=60.0)
    fit = dode.distill(gmm, noise(8, 12), sigmas, "euler", schedule=True, sigma_range=(0.05, 60.0), scale=4,
                       disable=True)
    positive = fit.sigmas[fit.sigmas > 0]
    assert positive.min() >= 0.05 * (1 - 1e-6) and positive.max() == sigmas[0]


def test_progress_reports_the_fit_phase_within_its_budget(gmm):
    seen = []
    dode.distill(gmm, noise(4, 13), karras_sigmas(4), "euler", schedule=True, scale=2, callback=seen.append,
                 disable=True)
    fit = [s for s in seen if s["phase"] == "fit"]
    assert {s["phase"] for s in seen} == {"teacher", "fit"} and fit
    assert all(0 <= s["i"] <= s["total"] for s in fit) and fit[0]["x"].shape == (4, 64)


def test_a_sensitive_sampler_gets_a_finer_jacobian_instead_of_no_fit():
    """DPM++ 2M under strong guidance (D = D_u + 3 (D_c − D_u) on an exact GMM): the coarsest forward difference gives
    no descent at all (the old fit returned the stock sampler); the finer one of FD_STEPS does."""
    from dode.lab.testbed.denoisers import GaussianMixtureDenoiser, make_gmm
    base = make_gmm(dim=256, k=16, seed=4)
    cond = GaussianMixtureDenoiser(base.means[:4], base.variances[:4].sqrt(), torch.ones(4))

    def guided(x, s):
        return base(x, s) + 3.0 * (cond(x, s) - base(x, s))

    fit = dode.distill(guided, noise(16, 0, dim=256), karras_sigmas(5), "dpmpp_2m", disable=True)
    assert fit.report.rmse_after < 0.5 * fit.report.rmse_stock and not fit.report.warnings


def test_extreme_logits_never_collapse_a_step_and_a_half_precision_grid_still_fits(gmm):
    """All the weight on one increment still leaves every step MIN_SHARE of the t-range (a WebUI run once got
    [14.6, 14.6, 14.6, 14.6, 0] from a trial); a float16 host grid where a trial rounds two σ's together is a rejected
    trial, not an error."""
    sigmas = karras_sigmas(4, sigma_min=0.03, sigma_max=14.6)
    grid = ScheduleMap(sigmas).sigmas(torch.tensor([-60.0, -60.0, 60.0], dtype=torch.float64))
    assert (grid.float()[1:] < grid.float()[:-1]).all()
    fit = dode.distill(gmm, noise(8, 14, sigma_max=14.6), sigmas.half(), "euler", schedule=True, scale=2,
                       disable=True)
    assert (fit.sigmas[1:] < fit.sigmas[:-1]).all() and torch.isfinite(fit.lambdas).all()


def test_detail_norms_are_the_norm_of_the_forward_differences_along_the_last_two_axes():
    """A ramp b·j along the width: every one of the H·(W − 1) horizontal differences is b, every vertical one 0."""
    ramp = torch.arange(3.0)[:, None, None, None] * torch.arange(5.0)[None, None, None, :].expand(3, 2, 4, 5)
    expected = torch.arange(3.0, dtype=torch.float64) * math.sqrt(2 * 4 * 4)
    assert torch.allclose(detail_norms(ramp), expected)
    assert torch.allclose(detail_norms(ramp.transpose(-1, -2)), expected)
    assert detail_norms(torch.ones(3, 64)) is None


def test_detail_norms_never_difference_across_channels():
    """A sequence (B, C, L) is differenced along L only, a video (B, C, T, H, W) along H and W: channels (and frames)
    that differ by a constant add nothing."""
    sequence = torch.arange(3.0)[:, None, None] * torch.arange(6.0) + 10 * torch.arange(4.0)[:, None]
    assert torch.allclose(detail_norms(sequence), torch.arange(3.0, dtype=torch.float64) * math.sqrt(4 * 5))
    video = torch.arange(2.0)[:, None, None, None, None] * torch.arange(5.0) + 7 * torch.arange(3.0)[:, None, None]
    video = video.expand(2, 4, 3, 6, 5)
    assert torch.allclose(detail_norms(video), torch.arange(2.0, dtype=torch.float64) * math.sqrt(4 * 3 * 6 * 4))


def test_the_residual_appends_each_latents_detail_gap_weighted_by_the_root_of_the_weight(digits_model):
    x, sigmas = noise_digits(4, 6), digits_grid(3)
    target = dode.sample(digits_model, x, digits_grid(12), "dpmpp_2m", disable=True)
    final = dode.sample(digits_model, x, sigmas, "euler", disable=True)
    fit = FinalFit(digits_model, x, sigmas, "euler", target, detail=2.0)
    r = fit.residual(final).view(4, -1)
    assert torch.equal(r[:, :-1], (final.double() - target.double()).flatten(1))
    gap = detail_norms(final) - detail_norms(target)
    assert torch.allclose(r[:, -1], math.sqrt(2.0) * gap) and gap.abs().min() > 0
    assert fit.distance(final) == pytest.approx((final.double() - target.double()).square().mean().sqrt().item())
    assert FinalFit(digits_model, x, sigmas, "euler", target, detail=0).residual(final).numel() == final.numel()


@pytest.mark.parametrize("sampler, steps", [("dpmpp_2m", 5), ("dpmpp_3m", 4)])
def test_the_detail_term_keeps_the_samples_as_detailed_as_the_teachers(digits_model, sampler, steps):
    """The distance alone lets a student that cannot match its teacher regress towards the mean (softer samples);
    the detail term brings the samples' mean ‖∇x‖ closer to the teacher's (measured on 32 latents, seeds 3–5:
    0.96–0.98 → 0.97–0.99 of the teacher's) at about the same distance."""
    x, sigmas = noise_digits(32, 3), digits_grid(steps)
    ratio = {}
    for weight in (0.0, 1.0):
        fit = dode.distill(digits_model, x, sigmas, sampler, schedule=True, detail=weight, disable=True)
        ratio[weight] = (detail_norms(fit.samples).mean() / detail_norms(fit.teacher_samples).mean()).item()
        assert fit.report.rmse_after < 0.5 * fit.report.rmse_stock
    assert ratio[0.0] < ratio[1.0] <= 1.02


def test_a_flat_latent_has_no_detail_term(gmm):
    x, sigmas = noise(8, 15), karras_sigmas(4)
    with_term = dode.distill(gmm, x, sigmas, "dpmpp_2m", schedule=True, scale=2, disable=True)
    without = dode.distill(gmm, x, sigmas, "dpmpp_2m", schedule=True, scale=2, detail=0, disable=True)
    assert torch.equal(with_term.lambdas, without.lambdas) and torch.equal(with_term.sigmas, without.sigmas)


def test_the_detail_term_never_buys_detail_with_a_sample_further_from_the_teacher_than_stock(digits_model):
    """λ alone at Euler 4 barely beats stock (0.3365 vs 0.3369), so with a heavy detail term the lowest-L state
    is further from the teacher than stock: the fit returns the lowest-L state it reached that is still closer."""
    x, sigmas = noise_digits(32, 3), digits_grid(4)
    fit = dode.distill(digits_model, x, sigmas, "euler", detail=100.0, disable=True)
    reached = [t["rmse"] for t in fit.report.trials if t["accepted"]]
    assert reached[-1] > fit.report.rmse_stock  # what the lowest L alone would have returned
    assert fit.report.rmse_after < fit.report.rmse_stock and not fit.report.warnings
    assert fit.report.rmse_after == pytest.approx([d for d in reached if d < fit.report.rmse_stock][-1], rel=1e-9)
    assert fit.report.rmse_after == pytest.approx(
        (fit.samples.double() - fit.teacher_samples.double()).square().mean().sqrt().item(), rel=1e-9)


def test_the_detail_term_is_on_for_schedule_fits_and_off_for_lambda_alone(digits_model):
    """The measured defaults (README, "The final fit's defaults, and why"): w = 1 with a schedule, the distance
    alone without."""
    x, sigmas = noise_digits(8, 4), digits_grid(3)
    for schedule, weight in ((False, 0.0), (True, 1.0)):
        default = dode.distill(digits_model, x, sigmas, "euler", schedule=schedule, disable=True)
        explicit = dode.distill(digits_model, x, sigmas, "euler", schedule=schedule, detail=weight, disable=True)
        other = dode.distill(digits_model, x, sigmas, "euler", schedule=schedule, detail=1.0 - weight, disable=True)
        assert torch.equal(default.lambdas, explicit.lambdas) and torch.equal(default.sigmas, explicit.sigmas)
        assert not torch.equal(default.lambdas, other.lambdas)


def test_quadratic_noise_is_zero_on_a_quadratic_and_sigma_on_added_noise():
    t = [0, 1e-3, 2e-3, 3e-3, 4e-3]
    a, b, c = torch.randn(3, 20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    smooth = torch.stack([a + b * v + c * v * v for v in t])
    assert quadratic_noise(smooth, t) < 1e-12
    noisy = smooth + 0.01 * torch.randn(smooth.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert quadratic_noise(noisy, t) == pytest.approx(0.01, rel=0.03)


def test_a_half_precision_model_gets_a_measured_noise_floor_and_larger_steps(gmm):
    """The same GMM with its input and output rounded to bfloat16 (what autocast does to a network): the floor is
    orders of magnitude above float32's, and the difference steps grow past FD_STEP to clear it."""
    rounded = lambda x, s: gmm(x.bfloat16().float(), s).bfloat16().float()  # noqa: E731
    x, sigmas = noise(16, 3), karras_sigmas(5)
    exact = dode.distill(gmm, x, sigmas, "euler", schedule=True, scale=4, disable=True).report
    half = dode.distill(rounded, x, sigmas, "euler", schedule=True, scale=4, disable=True).report
    assert half.noise_floor > 100 * exact.noise_floor
    assert max(half.fd_steps) > FD_STEP and max(exact.fd_steps) <= FD_STEP
    assert half.rmse_after < half.rmse_stock


def test_a_model_whose_noise_swamps_every_difference_gets_the_stock_sampler_and_says_why(gmm):
    """D + 20 sin(1e6 x): deterministic but rough at every scale a difference can take."""
    rough = lambda x, s: gmm(x, s) + 20 * torch.sin(1e6 * x)  # noqa: E731
    sigmas = karras_sigmas(4)
    fit = dode.distill(rough, noise(8, 5), sigmas, "euler", schedule=True, scale=4, disable=True)
    assert torch.equal(fit.sigmas, sigmas.double()) and fit.lambdas.tolist() == [0.0] * 4
    assert [w for w in fit.report.warnings if "swamps" in w and "stock sampler" in w]


def test_the_report_names_the_screened_starts_and_the_one_continued(gmm):
    fit = dode.distill(gmm, noise(16, 2), karras_sigmas(5), "euler", schedule=True, scale=4, disable=True)
    names = [s["start"] for s in fit.report.starts]
    assert sorted(names) == sorted(start_grids(karras_sigmas(5), karras_sigmas(5), [1.0] * 5))
    assert fit.report.start in names and sum("fitted" in s for s in fit.report.starts) >= 2
    ran = [s for s in fit.report.starts if "runoff" in s]
    assert len(ran) == 2 and all("fitted" in s for s in ran) and fit.report.start in [s["start"] for s in ran]
    assert f"{ran[0]['start']} {ran[0]['rmse']:.4f} → {ran[0]['fitted']:.4f} → {ran[0]['runoff']:.4f}" in \
        fit.report.table()
    assert "continued from: " + fit.report.start in fit.report.table()
    assert len(fit.report.fd_steps) == 4 + 4 and math.isfinite(fit.report.noise_floor)
    alone = dode.distill(gmm, noise(16, 2), karras_sigmas(5), "euler", scale=4, disable=True).report
    assert [s["start"] for s in alone.starts] == ["user grid"] and alone.start == "user grid"


def test_a_model_that_gives_nan_everywhere_gets_the_stock_sampler_and_says_so(gmm):
    """A half-precision overflow: every output NaN, the teacher's too. No NaN reaches λ or σ."""
    broken = lambda x, s: gmm(x, s) * math.nan  # noqa: E731
    sigmas = karras_sigmas(4)
    fit = dode.distill(broken, noise(8, 6), sigmas, "euler", schedule=True, scale=4, disable=True)
    assert torch.equal(fit.sigmas, sigmas.double()) and fit.lambdas.tolist() == [0.0] * 4
    assert [w for w in fit.report.warnings if "NaN" in w and "stock sampler" in w]


def test_a_step_the_noise_floor_set_takes_a_central_difference_and_the_others_a_forward_one(gmm):
    """With a noise floor of 1e-4 the columns whose change a 1e-2 step cannot lift over it get a larger step and a
    central difference; the rest keep the forward difference at FD_STEP (checked against the textbook formulas)."""
    x, sigmas = noise(8, 3), karras_sigmas(4)
    target = dode.sample(gmm, x, dode.lambdas.teacher_grid(sigmas, sigmas, 4).float(), "dpmpp_2m", disable=True)
    fit = FinalFit(gmm, x, sigmas, "euler", target)
    state = fit.evaluate(torch.zeros(fit.size, dtype=torch.float64))
    base = fit.residual(state.final)
    fit.noise = 1e-4
    jac = fit.jacobian(state).double()
    trace, _ = fit.trace(state.theta)
    raised = [k for k in range(fit.size) if fit.min_steps[k] > 0]
    assert raised and len(raised) < fit.size
    for k in range(fit.size):
        h = float(fit.steps[k])
        if k in raised:
            assert h > FD_STEP
            forward, back = (fit.probed(state.theta, trace, None, k, step) for step in (h, -h))
            expected = (forward - back) / (2 * h)
        else:
            assert h == FD_STEP
            expected = (fit.probed(state.theta, trace, None, k, h) - base) / h
        assert torch.allclose(jac[:, k], expected, rtol=1e-6, atol=1e-6)  # J is stored in float32


def screened_fit(gmm):
    x, sigmas = noise(8, 2), karras_sigmas(5)
    grid = dode.lambdas.teacher_grid(sigmas, sigmas, 4)
    target = dode.sample(gmm, x, grid.float(), "heun", disable=True)
    fit = FinalFit(CountedModel(gmm), x, sigmas, "euler", target, schedule=ScheduleMap(sigmas))
    stock = fit.evaluate(torch.zeros(fit.size, dtype=torch.float64), stock=True)
    starts = start_grids(sigmas, grid, [1.0] * len(grid))
    return fit, stock, final.screened_starts(fit, fit.schedule, starts, stock)


def test_a_state_keeps_theta_loss_sigmas_and_final_sample_only_and_the_fit_keeps_the_shared_head(gmm):
    fit, stock, screened = screened_fit(gmm)
    assert set(stock._fields) == {"theta", "loss", "sigmas", "final"}
    assert stock.sigmas == fit.unpack(stock.theta)[1][:-1].tolist() and stock.final.shape == fit.x.shape
    assert len(fit.head.calls) == fit.shared_calls == 1 and fit.head.calls[0][1] is not None
    losses = [s.loss for _, s in screened]
    assert losses == sorted(losses) and all(s.final is not None for _, s in screened)


def test_a_run_replays_the_shared_head_and_a_jacobian_traces_its_state_once(gmm):
    """Every run after the first replays its first call; a Jacobian costs one trace plus its probes, which replay
    the trace's unchanged head."""
    fit, stock, screened = screened_fit(gmm)
    model, n = fit.model, fit.n_lambdas
    before = model.calls
    state = fit.evaluate(screened[0][1].theta)
    assert model.calls - before == n - 1
    before = model.calls
    fit.jacobian(state)
    plain = 1 + fit.size * n  # a trace and one whole run per column, if nothing were replayed
    assert n - 1 <= model.calls - before < plain - fit.size


def test_short_fits_free_the_starts_and_keep_the_two_best_fits(gmm):
    fit, _, screened = screened_fit(gmm)
    starts = list(screened)
    assert final.affordable_starts(fit, 100_000) > 2
    best, fitted = final.short_fits(fit, starts, 100_000, None)
    assert not starts and len(best) == 2 and len(fitted) == min(len(screened), final.affordable_starts(fit, 100_000))
    assert best[0][1].loss <= best[1][1].loss
    assert sorted(fitted[name] for name, _ in best) == sorted(fitted.values())[:2] or \
        best[1][1].loss <= min(s.loss for _, s in screened)


def test_the_runoff_continues_both_finalists_and_ranks_them_by_where_they_end(gmm):
    fit, _, screened = screened_fit(gmm)
    finalists = [screened[0], screened[1]]
    ended, optimise = {}, fit.optimise

    def recorded(state, rows, progress=None):
        done = optimise(state, rows, progress)
        ended[len(ended)] = done.loss
        return done

    fit.optimise, before = recorded, fit.model.rows
    ranked, ran = final.runoff(fit, finalists, 2_000, None)
    assert not finalists and [name for name, _ in ranked] != [] and set(ran) == {screened[0][0], screened[1][0]}
    assert sorted(ended.values()) == [s.loss for _, s in ranked] and ranked[0][1].loss < screened[0][1].loss
    assert 0 < fit.model.rows - before <= 2 * 2_000
    alone = [screened[2]]
    before = fit.model.rows
    assert final.runoff(fit, alone, 2_000, None) == ([screened[2]], {}) and not alone and fit.model.rows == before


def test_the_runoff_winner_gets_the_rest_of_the_budget_and_the_runner_up_what_it_leaves(gmm, monkeypatch):
    calls, optimise = [], FinalFit.optimise

    def recorded(self, start, budget, progress=None):
        calls.append((budget, start.loss))
        done = optimise(self, start, budget, progress)
        calls[-1] += (done.loss,)
        return done

    monkeypatch.setattr(FinalFit, "optimise", recorded)
    x, sigmas = noise(16, 2), karras_sigmas(5)
    fit = dode.distill(gmm, x, sigmas, "euler", schedule=True, scale=4, disable=True)
    shorts = sum("fitted" in s for s in fit.report.starts)
    runoff, rest = calls[shorts:shorts + 2], calls[shorts + 2:]
    assert shorts >= 2 and len(rest) == 2 and runoff[0][0] == runoff[1][0] > 0
    assert rest[0][1] == min(r[2] for r in runoff) and rest[1][1] == max(r[2] for r in runoff)
    assert rest[1][0] < rest[0][0]  # the runner-up runs on what the winner left
    budget = 6 * greedy_rows(x, sigmas, "euler", "dpmpp_2m", False)  # the budget unit: at the default scale
    assert fit.report.network_rows <= budget


def test_broyden_updates_the_jacobian_in_place_by_the_textbook_formula():
    g = torch.Generator().manual_seed(0)
    jac, change, delta = (torch.randn(*shape, dtype=torch.float64, generator=g) for shape in ((6, 3), (6,), (3,)))
    expected = jac + torch.outer(change - jac @ delta, delta) / delta.dot(delta)
    stored = jac.float()
    updated = final.broyden(stored, change, delta)
    assert updated is stored and torch.allclose(updated.double(), expected, rtol=1e-6, atol=1e-6)


def test_the_normal_equations_of_a_float32_jacobian_are_summed_in_float64_by_blocks():
    g = torch.Generator().manual_seed(1)
    jac, r, delta = torch.randn(1000, 5, generator=g), torch.randn(1000, dtype=torch.float64, generator=g), \
        torch.randn(5, dtype=torch.float64, generator=g)
    normal, projected = final.gram(jac, r)
    wide = jac.double()
    assert torch.allclose(normal, wide.T @ wide, rtol=1e-12) and torch.allclose(projected, wide.T @ r, rtol=1e-12)
    assert torch.allclose(final.applied(jac, delta), wide @ delta, rtol=1e-12)


def test_a_jacobian_on_a_large_latent_keeps_a_random_subset_of_two_latent_batches_and_every_element_of_a_small_one():
    """A (1, 16, 8, 64, 64) flow latent: J takes JACOBIAN_LATENTS latent batches (float32), on sorted distinct
    elements, another subset for the next Jacobian; an image-sized residual keeps all of its elements."""
    from dode.lab.benchmarks.memory import FlowGaussian, shifted_grid
    x = torch.randn(1, 16, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    sigmas = shifted_grid(4)
    target = dode.sample(FlowGaussian(), x, shifted_grid(16), "euler", disable=True)
    fit = FinalFit(FlowGaussian(), x, sigmas, "euler", target, schedule=ScheduleMap(sigmas), detail=1.0)
    state = fit.evaluate(torch.zeros(fit.size, dtype=torch.float64), stock=True)
    jac = fit.jacobian(state)
    first = fit.elements
    assert jac.dtype == torch.float32 and jac.numel() * 4 <= final.JACOBIAN_LATENTS * x.numel() * 4
    keep = max(int(final.JACOBIAN_LATENTS * x.numel() / fit.size), final.MIN_JACOBIAN_ROWS)
    assert len(first) == jac.shape[0] == keep
    assert torch.equal(first.unique(), first) and int(first.max()) < fit.residual_size
    assert torch.allclose(fit.on_rows(fit.residual(state.final)), fit.residual(state.final)[first.long()])
    fit.jacobian(state)
    assert not torch.equal(fit.elements, first)
    assert fit.jacobian_elements(final.MIN_JACOBIAN_ROWS) is None


def test_each_trial_of_the_report_names_the_lambdas_and_grid_it_ran(gmm):
    """Sampling a trial's λ on its grid gives that trial's distance to the teacher (what
    lab/benchmarks/small_batches.py re-judges the visited states by)."""
    x, sigmas = noise(8, 4), karras_sigmas(4)
    fit = dode.distill(gmm, x, sigmas, "euler", schedule=True, scale=4, disable=True)
    trials = [t for t in fit.report.trials if math.isfinite(t["rmse"])]
    assert trials and any(t["sigmas"] != sigmas.tolist() for t in trials)
    for t in trials[:3]:
        out = dode.sample(gmm, x, torch.tensor(t["sigmas"]), "euler", lambdas=t["lambdas"], disable=True)
        rmse = (out.double() - fit.teacher_samples.double()).square().mean().sqrt().item()
        assert rmse == pytest.approx(t["rmse"], rel=1e-6)
