"""D-ODE samplers: λ = 0 is the stock sampler (k-diffusion, the published iPNDM / DEIS, or ComfyUI's flow-model
behaviour written out independently here), λ ≠ 0 is the paper's D~ = D + λ(D − D_prev) on the solver's output, and
the greedy fit beats the stock sampler."""
import functools
import inspect
import math

import numpy as np
import pytest
import torch

import dode
import dode.samplers as samplers
from dode.lambdas.fit import teacher_grid
from dode.samplers import get_solver, karras_sigmas as karras, landing_sigmas
from dode.samplers.multistep import deis_coefficients
from dode.lab.testbed.denoisers import make_gmm

SAMPLERS = tuple(dode.SAMPLER_NAMES)
MULTISTEP = ("dpmpp_2s", "dpmpp_3m", "ipndm", "deis")
KD_STOCK = {  # sampler -> (k-diffusion function, the arguments that make it deterministic)
    "euler": ("sample_euler", False),
    "heun": ("sample_heun", False),
    "dpmpp_2m": ("sample_dpmpp_2m", False),
    "dpmpp_2s": ("sample_dpmpp_2s_ancestral", True),
    "dpmpp_3m": ("sample_dpmpp_3m_sde", True),
}
GRIDS = {
    "karras2": lambda: karras(2),
    "karras5": lambda: karras(5),
    "karras10": lambda: karras(10),
    "karras3_tail": lambda: karras(8)[3:],            # an img2img-style tail: starts below σ_max
    "no_final_zero": lambda: karras(6)[:-1],          # refiner split: ends above 0
    "exponential": lambda: torch.cat([torch.linspace(math.log(14.6), math.log(0.03), 7).exp(), torch.zeros(1)]),
    "flow_like": lambda: torch.cat([torch.linspace(0.999, 0.05, 6), torch.zeros(1)]),
}
SHAPES = [(1, 64), (3, 1, 8, 8), (4, 4, 2, 8), (5, 4, 2, 8)]


def flow_grid(n, shift=1.0):
    """A rectified-flow schedule from σ = 1: t uniform in [1, 0], σ = shift·t / (1 + (shift − 1) t)."""
    t = torch.linspace(1, 0, n + 1)
    return shift * t / (1 + (shift - 1) * t)


def percent_to_sigma(percent, shift):
    """ComfyUI's ModelSamplingDiscreteFlow.percent_to_sigma, the offset a host passes as ``flow=``."""
    t = 1.0 - percent
    return shift * t / (1 + (shift - 1) * t)


def no_noise(x):
    return lambda sigma, sigma_next: torch.zeros_like(x)


def kd_sampler(kd, sampler, x):
    """The k-diffusion twin of ``sampler``, deterministic (eta = 0, no noise) where it is an SDE/ancestral one."""
    name, stochastic = KD_STOCK[sampler]
    fn = getattr(kd, name)
    if not stochastic:
        return fn
    return lambda *args, **kwargs: fn(*args, eta=0.0, noise_sampler=no_noise(x), **kwargs)


@pytest.fixture(scope="module")
def flow_gmm():
    return make_gmm(dim=64, k=8, seed=0, flow=True)


# λ = 0: the stock samplers

@pytest.mark.parametrize("sampler", list(KD_STOCK))
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("shape", SHAPES)
def test_zero_lambda_is_bit_identical_to_k_diffusion(kd, gmm, sampler, grid, shape):
    sigmas = GRIDS[grid]()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    expected = kd_sampler(kd, sampler, x)(gmm, x, sigmas, disable=True)
    assert torch.equal(dode.sample(gmm, x, sigmas, sampler, disable=True), expected)
    zeros = torch.zeros(dode.nfe(sampler, sigmas))
    assert torch.equal(dode.sample(gmm, x, sigmas, sampler, lambdas=zeros, disable=True), expected)


IPNDM_AB = {1: (1,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def reference_ipndm(model, x, sigmas):
    """iPNDM as published (Zhang & Chen 2023, Eq. for the 4th-order AB warm-started with lower orders), in σ, with
    ComfyUI's conventions: order min(4, i + 1) and a step to σ = 0 returns D."""
    ds, ones = [], x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * ones)
        ds.insert(0, (x - denoised) / s)
        if s_next == 0:
            x = denoised
            continue
        order = min(4, len(ds))
        if order == 1:
            x = x + (s_next - s) * ds[0]
        elif order == 2:
            x = x + (s_next - s) * (3 * ds[0] - ds[1]) / 2
        elif order == 3:
            x = x + (s_next - s) * (23 * ds[0] - 16 * ds[1] + 5 * ds[2]) / 12
        else:
            x = x + (s_next - s) * (55 * ds[0] - 59 * ds[1] + 37 * ds[2] - 9 * ds[3]) / 24
    return x


def reference_deis_coefficients(sigmas, order=3, nodes=10000):
    """tAB-DEIS weights in numpy: c_ij = ∫ dσ/dt ℓ_j(t) dt over [t_i, t_{i+1}], t the VP time with
    σ(t)² = exp(β_d t²/2 + β_min t) − 1, β from σ(1e-3) = 0.002 and σ(1) = 80 (EDM's VP), integrated with ComfyUI's
    rule (``nodes`` points on [t_i, t_{i+1}] both ends included, each weighted by the span / nodes)."""
    eps, smin, smax = 1e-3, 0.002, 80.0
    beta_d = 2 * (np.log(smin ** 2 + 1) / eps - np.log(smax ** 2 + 1)) / (eps - 1)
    beta_min = np.log(smax ** 2 + 1) - beta_d / 2
    s = sigmas.double().numpy()
    t = (np.sqrt(beta_min ** 2 + 2 * beta_d * np.log(s ** 2 + 1)) - beta_min) / beta_d
    out = []
    for i in range(len(s) - 1):
        k = min(order, i + 1)
        if k == 1 or s[i + 1] == 0:
            out.append([])
            continue
        tau = np.linspace(t[i], t[i + 1], nodes)
        q = beta_d * tau ** 2 / 2 + beta_min * tau
        dsigma = (beta_d * tau + beta_min) * np.exp(q) / (2 * np.sqrt(np.expm1(q)))
        knots = [t[i - j] for j in range(k)]
        row = []
        for j in range(k):
            others = [knots[m] for m in range(k) if m != j]
            poly = np.poly1d(others, r=True) / np.prod([knots[j] - o for o in others])
            row.append(float(np.sum(dsigma * poly(tau)) * (t[i + 1] - t[i]) / nodes))
        out.append(row)
    return out


def reference_deis(model, x, sigmas):
    """DEIS tAB-3 with ComfyUI's conventions: Euler on the first step and on a step to σ = 0."""
    coefs, ds, ones = reference_deis_coefficients(sigmas), [], x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        ds.insert(0, (x - denoised) / sigmas[i])
        if coefs[i]:
            x = x + sum(c * d for c, d in zip(coefs[i], ds))
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * ds[0]
    return x


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("shape", SHAPES)
def test_zero_lambda_ipndm_is_the_published_ipndm(gmm, grid, shape):
    sigmas = GRIDS[grid]()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4)) * sigmas[0]
    expected = reference_ipndm(gmm, x, sigmas)
    assert torch.equal(dode.sample(gmm, x, sigmas, "ipndm", disable=True), expected)
    zeros = torch.zeros(dode.nfe("ipndm", sigmas))
    assert torch.equal(dode.sample(gmm, x, sigmas, "ipndm", lambdas=zeros, disable=True), expected)


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("shape", SHAPES)
def test_zero_lambda_deis_is_the_published_deis(gmm, grid, shape):
    sigmas = GRIDS[grid]()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5)) * sigmas[0]
    ours = dode.sample(gmm, x, sigmas, "deis", disable=True)
    torch.testing.assert_close(ours, reference_deis(gmm, x, sigmas), rtol=1e-5, atol=1e-5 * float(sigmas[0]))
    zeros = torch.zeros(dode.nfe("deis", sigmas))
    assert torch.equal(dode.sample(gmm, x, sigmas, "deis", lambdas=zeros, disable=True), ours)


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("shape", SHAPES)
def test_zero_lambda_deis_in_float64_is_the_published_deis_to_1e_10(gmm, grid, shape):
    sigmas = GRIDS[grid]()
    x64 = (torch.randn(shape, generator=torch.Generator().manual_seed(5)) * sigmas[0]).double()
    model64 = lambda x, s: gmm(x.float(), s.float()).double()
    torch.testing.assert_close(dode.sample(model64, x64, sigmas.double(), "deis", disable=True),
                               reference_deis(model64, x64, sigmas.double()), rtol=1e-10, atol=1e-10)


def exact_deis_row(sigmas, i, k):
    """The tAB weights of step i by 64-point Gauss–Legendre on the same integrand (exact up to ~1e-12)."""
    eps, smin, smax = 1e-3, 0.002, 80.0
    beta_d = 2 * (np.log1p(smin ** 2) / eps - np.log1p(smax ** 2)) / (eps - 1)
    beta_min = np.log1p(smax ** 2) - beta_d / 2
    s = sigmas.double().numpy()
    t = (np.sqrt(beta_min ** 2 + 2 * beta_d * np.log1p(s ** 2)) - beta_min) / beta_d
    nodes, weights = np.polynomial.legendre.leggauss(64)
    tau = (t[i + 1] - t[i]) / 2 * nodes + (t[i + 1] + t[i]) / 2
    q = beta_d * tau ** 2 / 2 + beta_min * tau
    dsigma = (beta_d * tau + beta_min) * np.exp(q) / (2 * np.sqrt(np.expm1(q)))
    knots = [t[i - j] for j in range(k)]
    row = []
    for j in range(k):
        basis = np.prod([(tau - knots[m]) / (knots[j] - knots[m]) for m in range(k) if m != j], axis=0)
        row.append(float(np.sum(weights * dsigma * basis) * (t[i + 1] - t[i]) / 2))
    return row


DEIS_GRIDS = ["karras5", "karras10", "exponential", "flow_like"]


@pytest.mark.parametrize("grid", DEIS_GRIDS)
def test_deis_coefficients_are_the_numpy_reference(grid):
    sigmas = GRIDS[grid]()
    ours, ref = deis_coefficients(sigmas), reference_deis_coefficients(sigmas)
    assert [len(c) for c in ours] == [len(c) for c in ref]
    for row, ref_row in zip(ours, ref):
        np.testing.assert_allclose(row, ref_row, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("grid", DEIS_GRIDS)
def test_deis_coefficients_sum_to_the_step(grid):
    """The interpolation of a constant derivative is exact, so each row sums to σ_{i+1} − σ_i."""
    sigmas = GRIDS[grid]()
    for i, row in enumerate(deis_coefficients(sigmas)):
        if row:
            assert sum(row) == pytest.approx(float(sigmas[i + 1].double() - sigmas[i].double()), rel=1e-4)


@pytest.mark.parametrize("grid", DEIS_GRIDS)
def test_deis_coefficients_are_close_to_the_exact_integral(grid):
    sigmas = GRIDS[grid]()
    for i, row in enumerate(deis_coefficients(sigmas)):
        if row:
            step = float(sigmas[i + 1].double() - sigmas[i].double())
            np.testing.assert_allclose(row, exact_deis_row(sigmas, i, len(row)), rtol=1e-4, atol=1e-6 * abs(step))


# Flow (rectified-flow, ComfyUI CONST) models

def comfy_const_2s(model, x, sigmas):
    """ComfyUI's sample_dpmpp_2s_ancestral on a CONST model with eta=0 (its _RF variant), written out: the midpoint in
    λ = log((1 − σ)/σ), σ_s = 1/(e^{λ_mid} + 1), or 0.9999 when σ = 1; both updates are DDIM steps in σ."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * ones)
        if s_next == 0:
            x = x + (x - denoised) / s * (s_next - s)
            continue
        if s == 1.0:
            s_mid = 0.9999
        else:
            lam, lam_next = ((1 - s) / s).log(), ((1 - s_next) / s_next).log()
            s_mid = ((lam + 0.5 * (lam_next - lam)).exp() + 1) ** -1
        u = (s_mid / s) * x + (1 - s_mid / s) * denoised
        denoised_mid = model(u, s_mid * ones)
        x = (s_next / s) * x + (1 - s_next / s) * denoised_mid
    return x


def comfy_const_3m(model, x, sigmas, first_sigma):
    """ComfyUI's sample_dpmpp_3m_sde on a CONST model with eta=0, written out: a first σ ≥ 1 becomes
    ``first_sigma``, λ = −logit σ, α = σ e^λ = 1 − σ, and x' = (σ'/σ) x + α'(1 − e^{−h}) D + α' φ₂ d1 − α' φ₃ d2."""
    if sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = first_sigma
    ones, hist, hs = x.new_ones([x.shape[0]]), [], []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        if sigmas[i + 1] == 0:
            return denoised
        lam, lam_next = -torch.logit(sigmas[i]), -torch.logit(sigmas[i + 1])
        h = lam_next - lam
        alpha = sigmas[i + 1] * lam_next.exp()
        x = sigmas[i + 1] / sigmas[i] * x + alpha * -torch.expm1(-h) * denoised
        phi_2 = torch.expm1(-h) / h + 1
        if len(hist) == 2:
            r0, r1 = hs[0] / h, hs[1] / h
            d1_0, d1_1 = (denoised - hist[0]) / r0, (hist[0] - hist[1]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + (alpha * phi_2) * d1 - (alpha * (phi_2 / h - 0.5)) * d2
        elif len(hist) == 1:
            x = x + (alpha * phi_2) * ((denoised - hist[0]) / (hs[0] / h))
        hist, hs = [denoised] + hist[:1], [h] + hs[:1]
    return x


FLOW_GRIDS = {
    "from_one5": lambda: flow_grid(5),
    "from_one10": lambda: flow_grid(10),
    "shift3_from_one": lambda: flow_grid(8, shift=3.0),
    "tail": lambda: flow_grid(8)[2:],
    "no_final_zero": lambda: flow_grid(6)[:-1],
    "below_one": lambda: torch.cat([torch.linspace(0.97, 0.05, 7), torch.zeros(1)]),
}
FLOW_SHAPES = [(1, 64), (4, 1, 8, 8)]


def flow_noise(shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(6))


@pytest.mark.parametrize("grid", list(FLOW_GRIDS))
@pytest.mark.parametrize("shape", FLOW_SHAPES)
def test_flow_mode_dpmpp_2s_is_comfyui_const_behaviour(flow_gmm, grid, shape):
    sigmas, x = FLOW_GRIDS[grid](), flow_noise(shape)
    expected = comfy_const_2s(flow_gmm, x, sigmas)
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_2s", flow=True, disable=True), expected)
    zeros = torch.zeros(dode.nfe("dpmpp_2s", sigmas))
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_2s", lambdas=zeros, flow=True, disable=True), expected)


@pytest.mark.parametrize("grid", list(FLOW_GRIDS))
@pytest.mark.parametrize("shape", FLOW_SHAPES)
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_mode_dpmpp_3m_with_an_offset_is_comfyui_const_behaviour(flow_gmm, grid, shape, shift):
    sigmas, x = FLOW_GRIDS[grid](), flow_noise(shape)
    first = percent_to_sigma(1e-4, shift)
    expected = comfy_const_3m(flow_gmm, x, sigmas, first)
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_3m", flow=first, disable=True), expected)
    zeros = torch.zeros(dode.nfe("dpmpp_3m", sigmas))
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_3m", lambdas=zeros, flow=first, disable=True),
                       expected)


@pytest.mark.parametrize("grid", list(FLOW_GRIDS))
@pytest.mark.parametrize("shape", FLOW_SHAPES)
def test_flow_true_starts_dpmpp_3m_at_one_minus_1e_4(flow_gmm, grid, shape):
    sigmas, x = FLOW_GRIDS[grid](), flow_noise(shape)
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_3m", flow=True, disable=True),
                       comfy_const_3m(flow_gmm, x, sigmas, 1 - 1e-4))


def flow_ode_problem(flow_gmm):
    x = torch.randn(8, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    model = lambda x, s: flow_gmm(x.float(), s.float()).double()
    grid = lambda n: torch.cat([torch.linspace(0.98, 0.01, n + 1, dtype=torch.float64), torch.zeros(1).double()])
    return x, model, grid


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "dpmpp_3m"])
@pytest.mark.parametrize("flow", [False, True], ids=["ve_mode", "flow_mode"])
def test_flow_and_ve_modes_converge_to_the_same_flow_ode_solution(flow_gmm, sampler, flow):
    """Both parameterizations of 2S and 3M converge (at second order or better) to Heun's 1200-step solution."""
    x, model, grid = flow_ode_problem(flow_gmm)
    reference = dode.sample(model, x, grid(1200), "heun", disable=True)
    coarse, fine = (dode.sample(model, x, grid(n), sampler, flow=flow, disable=True) for n in (30, 120))
    assert (fine - reference).abs().max() < 1e-3
    assert (fine - reference).abs().max() < (coarse - reference).abs().max() / 8


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "dpmpp_3m"])
def test_flow_and_ve_modes_are_different_discretisations(flow_gmm, sampler):
    x, model, grid = flow_ode_problem(flow_gmm)
    assert not torch.equal(dode.sample(model, x, grid(30), sampler, disable=True),
                           dode.sample(model, x, grid(30), sampler, flow=True, disable=True))


def test_flow_offset_must_lie_in_0_1(flow_gmm):
    with pytest.raises(ValueError, match="offset first σ in \\(0, 1\\)"):
        dode.sample(flow_gmm, torch.randn(2, 64), flow_grid(6), "dpmpp_3m", flow=1.0)


def test_flow_mode_refuses_noise_levels_above_one(gmm):
    with pytest.raises(ValueError, match="noise levels in \\(0, 1\\]"):
        dode.sample(gmm, torch.randn(2, 64) * 80, karras(5), "dpmpp_2s", flow=True)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "ipndm", "deis"])
def test_sigma_space_solvers_ignore_the_flow_option(flow_gmm, sampler):
    """σ-space solvers are exact for flow models, so ``flow=True`` changes nothing."""
    sigmas, x = flow_grid(6), torch.randn(2, 64)
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, sampler, flow=True, disable=True),
                       dode.sample(flow_gmm, x, sigmas, sampler, disable=True))


def test_flow_mode_dpmpp_2s_midpoints_halve_the_log_snr():
    sigmas = flow_grid(6)
    mids = landing_sigmas("dpmpp_2s", sigmas, flow=True)[0::2][:-1]
    lam = ((1 - sigmas[1:-1]) / sigmas[1:-1]).log()
    lam_prev = ((1 - sigmas[:-2]) / sigmas[:-2]).log()
    expected = torch.sigmoid(-(lam + lam_prev) / 2)
    expected[0] = 0.9999
    torch.testing.assert_close(mids, expected)


def test_dpmpp_2s_midpoints_are_geometric_means():
    torch.testing.assert_close(landing_sigmas("dpmpp_2s", karras(5))[0:-1:2], (karras(5)[:-2] * karras(5)[1:-1]).sqrt())


# λ ≠ 0: the textbook D-ODE formulas

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


def manual_d_dpmpp_2s(model, x, sigmas, lambdas, flow=False):
    """Textbook D-DPM-Solver++(2S): each step is two DDIM steps, x_to = (σ_to/σ) x + (1 − σ_to/σ) D~, to the
    midpoint σ_s (√(σ σ'), or the half-logSNR midpoint for flow models) with D~ = D + λ (D − prev), then from x to σ'
    with D_s~ = D_s + λ' (D_s − D). A step to 0 is Euler."""
    prev, n, ones = x, 0, x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = model(x, s * ones)
        d_tilde = d + lambdas[n] * (d - prev)
        n += 1
        if s_next == 0:
            x, prev = d_tilde, d
            continue
        if not flow:
            s_mid = (s * s_next).sqrt()
        elif s == 1:
            s_mid = torch.tensor(0.9999, dtype=s.dtype)
        else:
            s_mid = torch.sigmoid((torch.logit(s) + torch.logit(s_next)) / 2)
        x_mid = (s_mid / s) * x + (1 - s_mid / s) * d_tilde
        d_mid = model(x_mid, s_mid * ones)
        x = (s_next / s) * x + (1 - s_next / s) * (d_mid + lambdas[n] * (d_mid - d))
        n += 1
        prev = d_mid
    return x


def manual_d_dpmpp_3m(model, x, sigmas, lambdas, flow=False):
    """Textbook D-DPM-Solver++(3M): the stock step x_stock = (σ'/σ) x + α'(1 − e^{−h}) D + α' φ₂ d1 − α' φ₃ d2
    defines D̄ by x_stock = (σ'/σ) x + α'(1 − e^{−h}) D̄; the D-ODE step uses D̄ + λ (D̄ − D̄_prev)."""
    lam_fn = (lambda s: -torch.logit(s)) if flow else (lambda s: -s.log())
    if flow and sigmas[0] >= 1:
        sigmas = torch.cat([sigmas.new_tensor([1 - 1e-4]), sigmas[1:]])
    prev, hist, hs, ones = x, [], [], x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = model(x, s * ones)
        if s_next == 0:
            return d + lambdas[i] * (d - prev)
        h = lam_fn(s_next) - lam_fn(s)
        alpha = (1 - s_next) if flow else 1.0
        x_stock = (s_next / s) * x + alpha * (1 - torch.exp(-h)) * d
        phi_2 = 1 - (1 - torch.exp(-h)) / h
        if len(hist) >= 1:
            d1_0 = (d - hist[0]) * h / hs[0]
            if len(hist) == 2:
                d1_1 = (hist[0] - hist[1]) * h / hs[1]
                r0, r1 = hs[0] / h, hs[1] / h
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x_stock = x_stock + alpha * phi_2 * d1 - alpha * (phi_2 / h - 0.5) * d2
            else:
                x_stock = x_stock + alpha * phi_2 * d1_0
        coef = alpha * (1 - torch.exp(-h))
        d_bar = (x_stock - (s_next / s) * x) / coef
        x = x_stock + lambdas[i] * coef * (d_bar - prev)
        prev, hist, hs = d_bar, [d] + hist[:1], [h] + hs[:1]
    return x


def manual_d_ab(model, x, sigmas, lambdas, weights):
    """Textbook D-ODE on an Adams–Bashforth step x' = x + Σ_j w_ij d_{i−j}: as a DDIM step with D̄ = x − σ d̄,
    d̄ = Σ_j w_ij d_{i−j} / (σ' − σ); x' = (σ'/σ) x + (1 − σ'/σ)(D̄ + λ (D̄ − D̄_prev)). First-order steps use D."""
    prev, ds, ones = x, [], x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = model(x, s * ones)
        ds.insert(0, (x - d) / s)
        w = weights(i, len(ds), s, s_next)
        out = d if w is None else x - s * sum(c * e for c, e in zip(w, ds)) / (s_next - s)
        x = (s_next / s) * x + (1 - s_next / s) * (out + lambdas[i] * (out - prev))
        prev = out
    return x


def manual_d_ipndm(model, x, sigmas, lambdas):
    def weights(i, n, s, s_next):
        return None if n == 1 or s_next == 0 else [(s_next - s) * w for w in IPNDM_AB[min(4, n)]]
    return manual_d_ab(model, x, sigmas, lambdas, weights)


def manual_d_deis(model, x, sigmas, lambdas):
    coefs = reference_deis_coefficients(sigmas)
    return manual_d_ab(model, x, sigmas, lambdas, lambda i, n, s, s_next: coefs[i] or None)


MANUAL = {"euler": manual_d_euler, "heun": manual_d_heun, "dpmpp_2m": manual_d_dpmpp_2m,
          "dpmpp_2s": manual_d_dpmpp_2s, "dpmpp_3m": manual_d_dpmpp_3m, "ipndm": manual_d_ipndm,
          "deis": manual_d_deis}


@pytest.mark.parametrize("sampler", list(MANUAL))
@pytest.mark.parametrize("grid", ["karras5", "karras10", "karras3_tail", "no_final_zero", "flow_like"])
@pytest.mark.parametrize("scale", ["x80", "sigma_max"])
def test_nonzero_lambda_matches_the_textbook_formula(gmm, sampler, grid, scale):
    sigmas = GRIDS[grid]().double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = x * (80 if scale == "x80" else sigmas[0])
    model = lambda x, s: gmm(x.float(), s.float()).double()
    lambdas = torch.linspace(-0.4, 0.9, dode.nfe(sampler, sigmas), dtype=torch.float64)
    ours = dode.sample(model, x, sigmas, sampler, lambdas=lambdas, disable=True)
    torch.testing.assert_close(ours, MANUAL[sampler](model, x, sigmas, lambdas), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(ours, dode.sample(model, x, sigmas, sampler, disable=True))


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "dpmpp_3m"])
@pytest.mark.parametrize("grid", ["from_one5", "below_one"])
def test_nonzero_lambda_flow_mode_matches_the_textbook_formula(flow_gmm, sampler, grid):
    sigmas = FLOW_GRIDS[grid]().double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    model = lambda x, s: flow_gmm(x.float(), s.float()).double()
    lambdas = torch.linspace(-0.4, 0.9, dode.nfe(sampler, sigmas), dtype=torch.float64)
    ours = dode.sample(model, x, sigmas, sampler, lambdas=lambdas, flow=True, disable=True)
    torch.testing.assert_close(ours, MANUAL[sampler](model, x, sigmas, lambdas, flow=True), rtol=1e-9, atol=1e-9)


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
@pytest.mark.parametrize("lam0", [0.0, 0.5, -0.3])
def test_euler_first_lambda_on_a_point_mass_scales_the_distance_to_it(grid, lam0):
    """x_1 − μ = (x_0 − μ)(σ_1 + λ_0 (σ_1 − σ_0))/σ_0 (D~_0 = μ + λ_0 (μ − x_0)); the later Euler steps are exact,
    x_N − μ = (x_1 − μ) σ_N/σ_1, and their λ multiply D_i − D_{i−1} = 0."""
    sigmas = ABOVE_ZERO[grid]().double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * sigmas[0]
    s0, s1, last = sigmas[0], sigmas[1], sigmas[-1]
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


def point_mass_case(sampler):
    """A point-mass run: its grid, noise, and λ that are ``first`` at the first evaluation and 0 (``first_only``) or
    non-zero (``everywhere``) after it. iPNDM combines derivatives (x − D)/σ, which agree only on the exact
    trajectory, so there the first λ stays 0."""
    sigmas = karras(6)[:-1].double()
    x = torch.randn(2, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * sigmas[0]
    n = dode.nfe(sampler, sigmas)
    first = 0.0 if sampler == "ipndm" else 0.3
    first_only = torch.zeros(n, dtype=torch.float64)
    first_only[0] = first
    everywhere = torch.linspace(0.3, -0.8, n, dtype=torch.float64)
    everywhere[0] = first
    return sigmas, x, first, first_only, everywhere


# DEIS is left out: its quadrature weights sum to the step only to ~1e-5.
POINT_MASS_SAMPLERS = [name for name in SAMPLERS if name != "deis"]


@pytest.mark.parametrize("sampler", POINT_MASS_SAMPLERS)
def test_on_a_point_mass_lambda_after_the_first_evaluation_does_nothing(sampler):
    """On the point mass every D-side output after the first equals μ, so D_i − D_prev = 0 and those λ change
    nothing (up to rounding)."""
    sigmas, x, _, first_only, everywhere = point_mass_case(sampler)
    model = point_mass(MU)
    torch.testing.assert_close(dode.sample(model, x, sigmas, sampler, lambdas=everywhere, disable=True),
                               dode.sample(model, x, sigmas, sampler, lambdas=first_only, disable=True),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("sampler", POINT_MASS_SAMPLERS)
def test_on_a_point_mass_only_the_first_lambda_moves_the_result(sampler):
    """The first λ (D_prev = x) moves the result, except in DPM++ 2S, whose step only uses the midpoint's D (= μ
    wherever the midpoint is), and in iPNDM, where it stays 0."""
    sigmas, x, first, _, everywhere = point_mass_case(sampler)
    model = point_mass(MU)
    moved = (dode.sample(model, x, sigmas, sampler, lambdas=everywhere, disable=True)
             - dode.sample(model, x, sigmas, sampler, disable=True)).abs().max()
    assert moved > 1e-3 if first and sampler != "dpmpp_2s" else moved < 1e-9


# Bookkeeping: evaluations, landings, callbacks

@pytest.mark.parametrize("sampler, grid, expected", [
    ("euler", "final_zero", 5), ("dpmpp_2m", "final_zero", 5), ("heun", "final_zero", 9), ("heun", "final_positive", 8),
    ("dpmpp_2s", "final_zero", 9), ("dpmpp_2s", "final_positive", 8), ("dpmpp_3m", "final_zero", 5),
    ("ipndm", "final_zero", 5), ("deis", "final_zero", 5),
])
def test_nfe_counts(sampler, grid, expected):
    sigmas = karras(5) if grid == "final_zero" else karras(5)[:-1]
    assert dode.nfe(sampler, sigmas) == expected


@pytest.mark.parametrize("sampler", ["dpmpp_3m", "ipndm", "deis"])
def test_one_evaluation_per_step_lands_on_the_grid(sampler):
    sigmas = karras(5)
    assert torch.equal(landing_sigmas(sampler, sigmas), sigmas[1:])


def test_dpmpp_2s_lands_on_the_grid_after_each_midpoint():
    sigmas = karras(5)
    landings = landing_sigmas("dpmpp_2s", sigmas)
    assert torch.equal(landings[1::2], sigmas[1:-1]) and landings[-1] == 0


def run_with_lambdas(gmm, sampler, sigmas, x):
    """Samples with λ = 0.3 everywhere; returns the σ of every model call and (i, σ, x, keys) of every callback."""
    calls, seen = [], []

    def counting(x, sigma, **kw):
        calls.append(float(sigma[0]))
        return gmm(x, sigma)

    dode.sample(counting, x, sigmas, sampler, lambdas=torch.full((dode.nfe(sampler, sigmas),), 0.3), disable=True,
                callback=lambda d: seen.append((d["i"], float(d["sigma"]), d["x"], sorted(d))))
    return calls, seen


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_one_model_call_per_lambda(gmm, sampler):
    sigmas = karras(6)
    calls, _ = run_with_lambdas(gmm, sampler, sigmas, torch.randn(2, 64) * sigmas[0])
    assert len(calls) == dode.nfe(sampler, sigmas)


@pytest.mark.parametrize("sampler", MULTISTEP)
def test_model_is_called_at_the_evaluation_levels(gmm, sampler):
    sigmas = karras(6)
    calls, _ = run_with_lambdas(gmm, sampler, sigmas, torch.randn(2, 64) * sigmas[0])
    if sampler == "dpmpp_2s":
        assert calls[1:-1:2] == landing_sigmas(sampler, sigmas)[0:-1:2].tolist()
    else:
        assert calls == sigmas[:-1].tolist()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_callback_once_per_step_at_its_sigma(gmm, sampler):
    sigmas = karras(6)
    _, seen = run_with_lambdas(gmm, sampler, sigmas, torch.randn(2, 64) * sigmas[0])
    assert [i for i, _, _, _ in seen] == list(range(len(sigmas) - 1))
    assert [s for _, s, _, _ in seen] == sigmas[:-1].tolist()


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("i", [1, 3])
def test_callback_state_is_the_output_of_a_run_stopped_there(gmm, sampler, i):
    """The state the callback sees at step i + 1 is the output of a run that stops at σ_{i+1}."""
    sigmas = karras(6)
    x = torch.randn(2, 64) * sigmas[0]
    _, seen = run_with_lambdas(gmm, sampler, sigmas, x)
    stopped = dode.sample(gmm, x, sigmas[:i + 2], sampler, disable=True,
                          lambdas=torch.full((dode.nfe(sampler, sigmas[:i + 2]),), 0.3))
    assert torch.equal(seen[i + 1][2], stopped)


@pytest.mark.parametrize("sampler", list(KD_STOCK))
def test_callback_matches_k_diffusion(kd, gmm, sampler):
    """Step index, σ and the keys of every callback are k-diffusion's (with λ ≠ 0 here, λ = 0 there)."""
    sigmas = karras(6)
    x = torch.randn(2, 64) * sigmas[0]
    _, seen = run_with_lambdas(gmm, sampler, sigmas, x)
    theirs = []
    kd_sampler(kd, sampler, x)(gmm, x, sigmas, disable=True,
                               callback=lambda d: theirs.append((d["i"], float(d["sigma"]), sorted(d))))
    assert [(i, s, keys) for i, s, _, keys in seen] == theirs


@pytest.mark.parametrize("name", SAMPLERS)
def test_registry_entry_is_the_exported_sampler(name):
    solver = get_solver(name)
    assert solver.name == name and solver.fn is getattr(samplers, f"sample_{name}")


@pytest.mark.parametrize("name", SAMPLERS)
def test_only_dpmpp_2s_and_3m_take_the_flow_option(name):
    solver = get_solver(name)
    assert solver.flow == ("flow" in inspect.signature(solver.fn).parameters) == (name in ("dpmpp_2s", "dpmpp_3m"))


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("sigmas", [karras(4), karras(4)[:-1]], ids=["final_zero", "final_positive"])
def test_landings_give_one_sigma_per_model_call_no_higher_than_its_start(gmm, name, sigmas):
    solver = get_solver(name)
    calls = []
    solver.fn(lambda x, s, **kw: calls.append(float(s[0])) or gmm(x, s), torch.randn(2, 64) * sigmas[0], sigmas,
              disable=True)
    landings = solver.landings(sigmas)
    assert len(landings) == len(calls) == dode.nfe(name, sigmas)
    assert all(lands <= at for lands, at in zip(landings.tolist(), calls))


def test_solver_labels_are_unique():
    assert len({s.label for s in samplers.SOLVERS.values()}) == len(dode.SAMPLER_NAMES)


def test_karras_grid_matches_k_diffusion(kd):
    assert torch.equal(karras(10), kd.get_sigmas_karras(10, 0.002, 80.0))


# Bad input

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


def test_wrong_lambda_length_is_rejected(gmm):
    with pytest.raises(ValueError, match="evaluates the network 9 times.*has 5 values"):
        dode.sample(gmm, torch.randn(2, 64), karras(5), "heun", lambdas=torch.zeros(5))


def test_unknown_sampler_is_rejected_with_the_choices(gmm):
    with pytest.raises(ValueError, match="unknown sampler 'eulr'; choose one of euler"):
        dode.sample(gmm, torch.randn(2, 64), karras(5), "eulr")


def test_empty_batch_is_rejected(gmm):
    with pytest.raises(ValueError, match="batch is empty"):
        dode.sample(gmm, torch.randn(0, 64), karras(5), "euler")


def test_non_finite_lambda_is_rejected(gmm):
    with pytest.raises(ValueError, match="NaN or infinity"):
        dode.sample(gmm, torch.randn(2, 64), karras(5), "euler", lambdas=[0.1, float("nan"), 0, 0, 0])


# The greedy fit

def rmse(a, b):
    return (a.double() - b.double()).square().mean().sqrt().item()


def fresh_distances(model, sampler, sigmas, fit, x, flow=False):
    """RMSE to the fit's teacher (Heun on the refined grid) on fresh noise x, stock and with the fitted λ."""
    grid = teacher_grid(sigmas, landing_sigmas(sampler, sigmas, flow).double(), fit.scale).float()
    teacher = dode.sample(model, x, grid, fit.teacher, disable=True)
    stock = dode.sample(model, x, sigmas, sampler, flow=flow, disable=True)
    dode_ = dode.sample(model, x, sigmas, sampler, lambdas=fit.lambdas, flow=flow, disable=True)
    return rmse(stock, teacher), rmse(dode_, teacher)


@functools.lru_cache(maxsize=None)
def greedy_fit(sampler):
    """The greedy fit of ``sampler`` on 48 latents of the session's GMM, once per sampler."""
    sigmas = karras(6)
    model = make_gmm(dim=64, k=8, seed=0)
    x = torch.randn(48, 64, generator=torch.Generator().manual_seed(10)) * sigmas[0]
    return model, sigmas, dode.distill(model, x, sigmas, sampler, compare_stock=True, objective="greedy",
                                       disable=True)


@pytest.mark.parametrize("sampler", MULTISTEP)
def test_greedy_fit_gives_one_finite_lambda_per_evaluation(sampler):
    _, sigmas, fit = greedy_fit(sampler)
    assert len(fit.lambdas) == dode.nfe(sampler, sigmas) and torch.isfinite(fit.lambdas).all()


@pytest.mark.parametrize("sampler", MULTISTEP)
def test_greedy_fit_beats_stock_on_its_batch(sampler):
    _, _, fit = greedy_fit(sampler)
    assert fit.report.rmse_after < fit.report.rmse_stock


@pytest.mark.parametrize("sampler", MULTISTEP)
def test_greedy_fit_beats_stock_on_fresh_noise(sampler):
    model, sigmas, fit = greedy_fit(sampler)
    fresh = torch.randn(128, 64, generator=torch.Generator().manual_seed(11)) * sigmas[0]
    stock, fitted = fresh_distances(model, sampler, sigmas, fit, fresh)
    assert fitted < 0.95 * stock


@functools.lru_cache(maxsize=None)
def flow_fit(sampler):
    """The greedy fit in flow mode on a shift-3 flow grid (its teacher grid holds the flow-mode 2S midpoints)."""
    sigmas = flow_grid(6, shift=3.0)
    model = make_gmm(dim=64, k=8, seed=0, flow=True)
    x = torch.randn(48, 64, generator=torch.Generator().manual_seed(12))
    fit = dode.distill(model, x, sigmas, sampler, flow=True, compare_stock=True, objective="greedy", disable=True)
    return model, sigmas, x, fit


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "dpmpp_3m"])
def test_flow_mode_fit_beats_stock_on_its_batch(sampler):
    _, _, _, fit = flow_fit(sampler)
    assert fit.report.rmse_after < fit.report.rmse_stock


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "dpmpp_3m"])
def test_flow_mode_fit_samples_are_the_flow_mode_sampler_with_its_lambdas(sampler):
    model, sigmas, x, fit = flow_fit(sampler)
    torch.testing.assert_close(fit.samples, dode.sample(model, x, sigmas, sampler, lambdas=fit.lambdas, flow=True,
                                                        disable=True))


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "dpmpp_3m"])
def test_flow_mode_fit_beats_stock_on_fresh_noise(sampler):
    model, sigmas, _, fit = flow_fit(sampler)
    fresh = torch.randn(128, 64, generator=torch.Generator().manual_seed(13))
    stock, fitted = fresh_distances(model, sampler, sigmas, fit, fresh, flow=True)
    assert fitted < stock
