"""D-ODE samplers: λ = 0 is bit-identical to k-diffusion; λ ≠ 0 is the paper's D~ = D + λ(D − D_prev)."""
import pytest
import torch

import dode
from dode.samplers import get_solver, karras_sigmas as karras

STOCK = {"euler": "sample_euler", "heun": "sample_heun", "dpmpp_2m": "sample_dpmpp_2m"}
GRIDS = {
    "karras5": lambda: karras(5),
    "karras10": lambda: karras(10),
    "karras3_tail": lambda: karras(8)[3:],            # an img2img-style tail: starts below σ_max
    "no_final_zero": lambda: karras(6)[:-1],          # refiner split: ends above 0
    "flow": lambda: torch.cat([torch.linspace(0.999, 0.05, 6), torch.zeros(1)]),
}


@pytest.mark.parametrize("sampler", list(STOCK))
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("shape", [(1, 64), (3, 1, 8, 8), (4, 4, 2, 8)])
def test_zero_lambda_is_bit_identical_to_k_diffusion(kd, gmm, sampler, grid, shape):
    sigmas = GRIDS[grid]()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    expected = getattr(kd, STOCK[sampler])(gmm, x, sigmas, disable=True)
    assert torch.equal(dode.sample(gmm, x, sigmas, sampler, disable=True), expected)
    zeros = torch.zeros(dode.nfe(sampler, sigmas))
    assert torch.equal(dode.sample(gmm, x, sigmas, sampler, lambdas=zeros, disable=True), expected)


@pytest.mark.parametrize("sampler", list(STOCK))
def test_callback_and_nfe_match_k_diffusion(kd, gmm, sampler):
    sigmas = karras(6)
    x = torch.randn(2, 64) * sigmas[0]
    calls, ours, theirs = [], [], []

    def counting(x, sigma, **kw):
        calls.append(float(sigma[0]))
        return gmm(x, sigma)

    dode.sample(counting, x, sigmas, sampler, lambdas=torch.full((dode.nfe(sampler, sigmas),), 0.3),
                callback=lambda d: ours.append((d["i"], float(d["sigma"]), sorted(d))), disable=True)
    assert len(calls) == dode.nfe(sampler, sigmas)
    getattr(kd, STOCK[sampler])(gmm, x, sigmas, callback=lambda d: theirs.append((d["i"], float(d["sigma"]),
                                                                                   sorted(d))), disable=True)
    assert ours == theirs


def manual_d_euler(model, x, sigmas, lambdas):
    """Textbook D-Euler: D~ = D + λ (D − D_prev), D_prev = x at the first step, then a plain Euler step with D~."""
    prev = x
    for i in range(len(sigmas) - 1):
        d = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
        d_tilde = d + lambdas[i] * (d - prev)
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - d_tilde) / sigmas[i]
        prev = d
    return x


def manual_d_heun(model, x, sigmas, lambdas):
    """Textbook D-Heun, one λ per evaluation: the predictor's D~ moves the corrector point, the corrector uses
    D'~ = D' + λ (D' − D) in the Heun average; the step to 0 is Euler."""
    prev, n, ones = x, 0, x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = model(x, s * ones)
        x_pred = x + (s_next - s) * (x - (d + lambdas[n] * (d - prev))) / s
        n += 1
        if s_next == 0:
            x, prev = x_pred, d
            continue
        d2 = model(x_pred, s_next * ones)
        d2_tilde = d2 + lambdas[n] * (d2 - d)
        n += 1
        x = x + (s_next - s) * ((x - d) / s + (x_pred - d2_tilde) / s_next) / 2
        prev = d2
    return x


def manual_d_dpmpp_2m(model, x, sigmas, lambdas):
    """Textbook D-DPM-Solver++(2M): λ extrapolates the combined estimate D̄ along D̄_i − D̄_{i−1}."""
    prev, old, ones = x, None, x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i].double(), sigmas[i + 1].double()
        d = model(x, sigmas[i] * ones)
        if old is None or s_next == 0:
            comb = d
        else:
            h, h_last = (s / s_next).log(), (sigmas[i - 1].double() / s).log()
            comb = (1 + h / (2 * h_last)) * d - h / (2 * h_last) * old
        x = (s_next / s) * x + (1 - s_next / s) * (comb + lambdas[i] * (comb - prev))
        prev, old = comb, d
    return x


MANUAL = {"euler": manual_d_euler, "heun": manual_d_heun, "dpmpp_2m": manual_d_dpmpp_2m}


@pytest.mark.parametrize("sampler", list(MANUAL))
@pytest.mark.parametrize("grid", ["karras5", "karras10", "karras3_tail", "no_final_zero", "flow"])
def test_nonzero_lambda_matches_the_textbook_formula(gmm, sampler, grid):
    sigmas = GRIDS[grid]().double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 80
    model = lambda x, s: gmm(x.float(), s.float()).double()
    lambdas = torch.linspace(-0.4, 0.9, dode.nfe(sampler, sigmas), dtype=torch.float64)
    ours = dode.sample(model, x, sigmas, sampler, lambdas=lambdas, disable=True)
    torch.testing.assert_close(ours, MANUAL[sampler](model, x, sigmas, lambdas), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(ours, dode.sample(model, x, sigmas, sampler, disable=True))


def point_mass(mu):
    """The exact denoiser of a one-point data set: D(x, σ) = μ for every x and σ. Every D_i − D_{i−1} is 0, so only
    the first evaluation's λ (whose D_prev is the initial x) can change anything."""
    return lambda x, sigma, **kwargs: mu.expand_as(x).clone()


MU = torch.linspace(-1, 1, 64, dtype=torch.float64)
ABOVE_ZERO = {  # grids ending above 0: a step to σ = 0 returns μ, whatever came before
    "no_final_zero": lambda: karras(6)[:-1],
    "tail": lambda: karras(8)[2:-1],
    "two_steps": lambda: torch.tensor([10.0, 1.0, 0.1]),
}


@pytest.mark.parametrize("grid", list(ABOVE_ZERO))
def test_euler_first_lambda_on_a_point_mass_scales_the_distance_to_it(grid):
    """x_1 − μ = (x_0 − μ)(σ_1 + λ_0 (σ_1 − σ_0))/σ_0 (D~_0 = μ + λ_0 (μ − x_0)); the later Euler steps are exact,
    x_N − μ = (x_1 − μ) σ_N/σ_1, and their λ multiply D_i − D_{i−1} = 0."""
    sigmas = ABOVE_ZERO[grid]().double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * sigmas[0]
    s0, s1, last = sigmas[0], sigmas[1], sigmas[-1]
    for lam0 in (0.0, 0.5, -0.3):
        lambdas = [lam0] + [0.7] * (len(sigmas) - 2)
        out = dode.sample(point_mass(MU), x, sigmas, "euler", lambdas=lambdas, disable=True)
        expected = MU + (x - MU) * (s1 + lam0 * (s1 - s0)) / s0 * last / s1
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid", list(ABOVE_ZERO))
def test_heun_lambdas_on_a_point_mass(grid):
    """The predictor's λ_0 moves the corrector's point: x' − μ = (x_0 − μ)(σ_1 + λ_0 (σ_1 − σ_0))/σ_0, and
    x_1 = x_0 + (σ_1 − σ_0)((x_0 − μ)/σ_0 + (x' − μ)/σ_1)/2. The corrector's λ multiplies D' − D_0 = 0 (its D_prev is
    the predictor's D of the same step, not the previous step's output), and the later steps are exact."""
    sigmas = ABOVE_ZERO[grid]().double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * sigmas[0]
    s0, s1, last = sigmas[0], sigmas[1], sigmas[-1]
    lam0 = 0.4
    lambdas = torch.full((dode.nfe("heun", sigmas),), 0.9, dtype=torch.float64)
    lambdas[0] = lam0
    out = dode.sample(point_mass(MU), x, sigmas, "heun", lambdas=lambdas, disable=True)
    x_pred = MU + (x - MU) * (s1 + lam0 * (s1 - s0)) / s0
    x1 = x + (s1 - s0) * ((x - MU) / s0 + (x_pred - MU) / s1) / 2
    torch.testing.assert_close(out, MU + (x1 - MU) * last / s1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sampler", [name for name in dode.SAMPLER_NAMES if name != "deis"])
def test_on_a_point_mass_lambda_after_the_first_evaluation_does_nothing(sampler):
    """On the point mass every D-side output after the first equals μ, so D_i − D_prev = 0 and those λ change
    nothing (up to rounding); the first λ (D_prev = x) moves the result, except in DPM++ 2S, whose step only uses
    the midpoint's D (= μ wherever the midpoint is). iPNDM combines derivatives (x − D)/σ, which agree only on the
    exact trajectory, so there the first λ stays 0 (DEIS too, and its quadrature weights sum to the step only to
    ~1e-5, so it is left out)."""
    sigmas = karras(6)[:-1].double()
    x = torch.randn(2, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * sigmas[0]
    n = dode.nfe(sampler, sigmas)
    first = 0.0 if sampler in ("ipndm", "deis") else 0.3
    first_only = torch.zeros(n, dtype=torch.float64)
    first_only[0] = first
    everywhere = torch.linspace(0.3, -0.8, n, dtype=torch.float64)
    everywhere[0] = first
    model = point_mass(MU)
    out = dode.sample(model, x, sigmas, sampler, lambdas=everywhere, disable=True)
    torch.testing.assert_close(out, dode.sample(model, x, sigmas, sampler, lambdas=first_only, disable=True),
                               rtol=0, atol=1e-9)
    moved = (out - dode.sample(model, x, sigmas, sampler, disable=True)).abs().max()
    assert moved > 1e-3 if first and sampler != "dpmpp_2s" else moved < 1e-9


def test_nfe_counts():
    sigmas = karras(5)
    assert dode.nfe("euler", sigmas) == 5
    assert dode.nfe("dpmpp_2m", sigmas) == 5
    assert dode.nfe("heun", sigmas) == 9
    assert dode.nfe("heun", sigmas[:-1]) == 8


@pytest.mark.parametrize("sigmas, message", [
    (torch.tensor([1.0, 2.0, 0.0]), "strictly decreasing"),
    (torch.tensor([2.0, 1.0, 1.0, 0.0]), "strictly decreasing"),
    (torch.tensor([2.0, 0.0, -1.0]), "0 allowed only as the last"),
    (torch.tensor([2.0, float("nan"), 0.0]), "NaN"),
    (torch.tensor([[2.0, 1.0]]), "1-D"),
])
def test_bad_grids_are_rejected_when_lambda_is_given(gmm, sigmas, message):
    with pytest.raises(ValueError, match=message):
        dode.sample(gmm, torch.randn(2, 64), sigmas, "euler", lambdas=[0.1] * max(1, sigmas.shape[-1] - 1))


def test_wrong_lambda_length_unknown_sampler_and_empty_batch(gmm):
    sigmas = karras(5)
    with pytest.raises(ValueError, match="evaluates the network 9 times.*has 5 values"):
        dode.sample(gmm, torch.randn(2, 64), sigmas, "heun", lambdas=torch.zeros(5))
    with pytest.raises(ValueError, match="unknown sampler 'eulr'; choose one of euler"):
        dode.sample(gmm, torch.randn(2, 64), sigmas, "eulr")
    with pytest.raises(ValueError, match="batch is empty"):
        dode.sample(gmm, torch.randn(0, 64), sigmas, "euler")
    with pytest.raises(ValueError, match="NaN or infinity"):
        dode.sample(gmm, torch.randn(2, 64), sigmas, "euler", lambdas=[0.1, float("nan"), 0, 0, 0])


def test_karras_grid_matches_k_diffusion(kd):
    assert torch.equal(karras(10), kd.get_sigmas_karras(10, 0.002, 80.0))


@pytest.mark.parametrize("name", dode.SAMPLER_NAMES)
@pytest.mark.parametrize("sigmas", [karras(4), karras(4)[:-1]], ids=["final_zero", "final_positive"])
def test_registry_entry_is_the_exported_sampler_and_counts_its_calls(gmm, name, sigmas):
    """Each registered solver is the module's ``sample_<name>``; its landings give one σ per network call it really
    makes, each no higher than the σ of the state it starts from; only the solvers that take ``flow=`` say so."""
    import inspect
    import dode.samplers as samplers
    solver = get_solver(name)
    assert solver.name == name and solver.fn is getattr(samplers, f"sample_{name}")
    assert solver.flow == ("flow" in inspect.signature(solver.fn).parameters) == (name in ("dpmpp_2s", "dpmpp_3m"))
    calls = []
    solver.fn(lambda x, s, **kw: calls.append(float(s[0])) or gmm(x, s), torch.randn(2, 64) * sigmas[0], sigmas,
              disable=True)
    landings = solver.landings(sigmas)
    assert len(landings) == len(calls) == dode.nfe(name, sigmas)
    assert all(lands <= at for lands, at in zip(landings.tolist(), calls))
    assert len({s.label for s in dode.samplers.SOLVERS.values()}) == len(dode.SAMPLER_NAMES)
