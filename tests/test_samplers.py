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
def test_nonzero_lambda_matches_the_textbook_formula(gmm, sampler):
    sigmas = karras(5).double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 80
    model = lambda x, s: gmm(x.float(), s.float()).double()
    lambdas = torch.linspace(-0.4, 0.9, dode.nfe(sampler, sigmas), dtype=torch.float64)
    ours = dode.sample(model, x, sigmas, sampler, lambdas=lambdas, disable=True)
    torch.testing.assert_close(ours, MANUAL[sampler](model, x, sigmas, lambdas), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(ours, dode.sample(model, x, sigmas, sampler, disable=True))


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


def test_registry_is_consistent():
    for name in dode.SAMPLER_NAMES:
        solver = get_solver(name)
        assert solver.name == name and solver.fn.__name__ == f"sample_{name}"
