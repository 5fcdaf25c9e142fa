"""DPM++ 2S, DPM++ 3M, iPNDM and DEIS: λ = 0 is the stock sampler (k-diffusion, or ComfyUI's behaviour written out
independently here), λ ≠ 0 is the paper's correction on the solver's output, and the fit beats the stock sampler."""
import math

import numpy as np
import pytest
import torch

import dode
from dode.lambdas.fit import teacher_grid
from dode.samplers import karras_sigmas as karras, landing_sigmas
from dode.samplers.multistep import deis_coefficients
from dode.testbed.denoisers import make_gmm

NEW = ("dpmpp_2s", "dpmpp_3m", "ipndm", "deis")
GRIDS = {
    "karras2": lambda: karras(2),
    "karras5": lambda: karras(5),
    "karras10": lambda: karras(10),
    "karras3_tail": lambda: karras(8)[3:],
    "no_final_zero": lambda: karras(6)[:-1],
    "exponential": lambda: torch.cat([torch.linspace(math.log(14.6), math.log(0.03), 7).exp(), torch.zeros(1)]),
    "flow_like": lambda: torch.cat([torch.linspace(0.999, 0.05, 6), torch.zeros(1)]),
}
SHAPES = [(1, 64), (3, 1, 8, 8), (5, 4, 2, 8)]


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


@pytest.fixture(scope="module")
def flow_gmm():
    return make_gmm(dim=64, k=8, seed=0, flow=True)


# --- λ = 0: the stock samplers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler, stock", [("dpmpp_2s", "sample_dpmpp_2s_ancestral"),
                                            ("dpmpp_3m", "sample_dpmpp_3m_sde")])
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("shape", SHAPES)
def test_zero_lambda_is_bit_identical_to_k_diffusion(kd, gmm, sampler, stock, grid, shape):
    sigmas = GRIDS[grid]()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * sigmas[0]
    expected = getattr(kd, stock)(gmm, x, sigmas, eta=0.0, noise_sampler=no_noise(x), disable=True)
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
    x64, model64 = x.double(), (lambda x, s: gmm(x.float(), s.float()).double())
    torch.testing.assert_close(dode.sample(model64, x64, sigmas.double(), "deis", disable=True),
                               reference_deis(model64, x64, sigmas.double()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("grid", ["karras5", "karras10", "exponential", "flow_like"])
def test_deis_coefficients_integrate_the_interpolated_derivative(grid):
    """Same weights as the numpy reference, close to the exact integral (Gauss–Legendre), and they sum to the step
    σ_{i+1} − σ_i (the interpolation of a constant derivative is exact)."""
    sigmas = GRIDS[grid]()
    ours, ref = deis_coefficients(sigmas), reference_deis_coefficients(sigmas)
    assert [len(c) for c in ours] == [len(c) for c in ref]
    for i, (row, ref_row) in enumerate(zip(ours, ref)):
        np.testing.assert_allclose(row, ref_row, rtol=1e-9, atol=1e-14)
        if row:
            step = float(sigmas[i + 1].double() - sigmas[i].double())
            assert sum(row) == pytest.approx(step, rel=1e-4)
            exact = exact_deis_row(sigmas, i, len(row))
            np.testing.assert_allclose(row, exact, rtol=1e-4, atol=1e-6 * abs(step))


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


# --- flow (rectified-flow, ComfyUI CONST) models -------------------------------------------------------------------

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


@pytest.mark.parametrize("grid", list(FLOW_GRIDS))
@pytest.mark.parametrize("shape", [(1, 64), (4, 1, 8, 8)])
def test_flow_mode_is_comfyui_const_behaviour(flow_gmm, grid, shape):
    sigmas = FLOW_GRIDS[grid]()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(6))
    expected = comfy_const_2s(flow_gmm, x, sigmas)
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_2s", flow=True, disable=True), expected)
    zeros = torch.zeros(dode.nfe("dpmpp_2s", sigmas))
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_2s", lambdas=zeros, flow=True, disable=True), expected)
    for shift in (1.0, 3.0):
        first = percent_to_sigma(1e-4, shift)
        expected = comfy_const_3m(flow_gmm, x, sigmas, first)
        assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_3m", flow=first, disable=True), expected)
        zeros = torch.zeros(dode.nfe("dpmpp_3m", sigmas))
        assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_3m", lambdas=zeros, flow=first, disable=True),
                           expected)
    assert torch.equal(dode.sample(flow_gmm, x, sigmas, "dpmpp_3m", flow=True, disable=True),
                       comfy_const_3m(flow_gmm, x, sigmas, 1 - 1e-4))


def test_flow_and_ve_modes_solve_the_same_ode(flow_gmm):
    """Both parameterizations of 2S and 3M converge (at second order or better) to the same flow ODE solution."""
    x = torch.randn(8, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    model = lambda x, s: flow_gmm(x.float(), s.float()).double()
    grid = lambda n: torch.cat([torch.linspace(0.98, 0.01, n + 1, dtype=torch.float64), torch.zeros(1).double()])
    reference = dode.sample(model, x, grid(1200), "heun", disable=True)
    for sampler in ("dpmpp_2s", "dpmpp_3m"):
        for flow in (False, True):
            coarse, fine = (dode.sample(model, x, grid(n), sampler, flow=flow, disable=True) for n in (30, 120))
            assert (fine - reference).abs().max() < 1e-3
            assert (fine - reference).abs().max() < (coarse - reference).abs().max() / 8
        assert not torch.equal(dode.sample(model, x, grid(30), sampler, disable=True),
                               dode.sample(model, x, grid(30), sampler, flow=True, disable=True))


def test_flow_option_checks_and_registry(gmm, flow_gmm):
    sigmas = flow_grid(6)
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match="offset first σ in \\(0, 1\\)"):
        dode.sample(flow_gmm, x, sigmas, "dpmpp_3m", flow=1.0)
    with pytest.raises(ValueError, match="noise levels in \\(0, 1\\]"):
        dode.sample(gmm, x * 80, karras(5), "dpmpp_2s", flow=True)
    # σ-space solvers are exact for flow models and ignore the option
    for sampler in ("euler", "heun", "dpmpp_2m", "ipndm", "deis"):
        assert torch.equal(dode.sample(flow_gmm, x, sigmas, sampler, flow=True, disable=True),
                           dode.sample(flow_gmm, x, sigmas, sampler, disable=True))
    mids = landing_sigmas("dpmpp_2s", sigmas, flow=True)[0::2][:-1]
    lam = ((1 - sigmas[1:-1]) / sigmas[1:-1]).log()
    lam_prev = ((1 - sigmas[:-2]) / sigmas[:-2]).log()
    expected = torch.sigmoid(-(lam + lam_prev) / 2)
    expected[0] = 0.9999
    torch.testing.assert_close(mids, expected)
    torch.testing.assert_close(landing_sigmas("dpmpp_2s", karras(5))[0:-1:2], (karras(5)[:-2] * karras(5)[1:-1]).sqrt())


# --- λ ≠ 0: the textbook D-ODE formulas ----------------------------------------------------------------------------

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


MANUAL = {"dpmpp_2s": manual_d_dpmpp_2s, "dpmpp_3m": manual_d_dpmpp_3m, "ipndm": manual_d_ipndm,
          "deis": manual_d_deis}


@pytest.mark.parametrize("sampler", NEW)
@pytest.mark.parametrize("grid", ["karras5", "karras3_tail", "no_final_zero"])
def test_nonzero_lambda_matches_the_textbook_formula(gmm, sampler, grid):
    sigmas = GRIDS[grid]().double()
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) * sigmas[0]
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


# --- bookkeeping: evaluations, landings, callbacks -----------------------------------------------------------------

def test_nfe_and_landings():
    sigmas = karras(5)
    assert dode.nfe("dpmpp_2s", sigmas) == 9 and dode.nfe("dpmpp_2s", sigmas[:-1]) == 8
    for sampler in ("dpmpp_3m", "ipndm", "deis"):
        assert dode.nfe(sampler, sigmas) == 5
        assert torch.equal(landing_sigmas(sampler, sigmas), sigmas[1:])
    landings = landing_sigmas("dpmpp_2s", sigmas)
    assert torch.equal(landings[1::2], sigmas[1:-1]) and landings[-1] == 0


@pytest.mark.parametrize("sampler", NEW)
def test_evaluations_and_callbacks(kd, gmm, sampler):
    """One model call per λ, at the evaluation levels; the callback gets the current state once per step."""
    sigmas = karras(6)
    x = torch.randn(2, 64) * sigmas[0]
    calls, seen = [], []

    def counting(x, sigma, **kw):
        calls.append(float(sigma[0]))
        return gmm(x, sigma)

    lambdas = torch.full((dode.nfe(sampler, sigmas),), 0.3)
    dode.sample(counting, x, sigmas, sampler, lambdas=lambdas, disable=True,
                callback=lambda d: seen.append((d["i"], float(d["sigma"]), d["x"])))
    assert len(calls) == dode.nfe(sampler, sigmas)
    assert [i for i, _, _ in seen] == list(range(len(sigmas) - 1))
    assert [s for _, s, _ in seen] == sigmas[:-1].tolist()
    if sampler == "dpmpp_2s":
        assert calls[1:-1:2] == landing_sigmas(sampler, sigmas)[0:-1:2].tolist()
    else:
        assert calls == sigmas[:-1].tolist()
    # the state the callback sees at step i + 1 is the output of a run that stops at σ_{i+1}
    for i in (1, 3):
        stopped = dode.sample(gmm, x, sigmas[:i + 2], sampler, lambdas=lambdas[:dode.nfe(sampler, sigmas[:i + 2])],
                              disable=True)
        assert torch.equal(seen[i + 1][2], stopped)
    if sampler in ("dpmpp_2s", "dpmpp_3m"):
        stock = {"dpmpp_2s": kd.sample_dpmpp_2s_ancestral, "dpmpp_3m": kd.sample_dpmpp_3m_sde}[sampler]
        ours, theirs = [], []
        dode.sample(gmm, x, sigmas, sampler, callback=lambda d: ours.append(sorted(d)), disable=True)
        stock(gmm, x, sigmas, eta=0.0, noise_sampler=no_noise(x), callback=lambda d: theirs.append(sorted(d)),
              disable=True)
        assert ours == theirs


# --- the fit -------------------------------------------------------------------------------------------------------

def rmse(a, b):
    return (a.double() - b.double()).square().mean().sqrt().item()


def fresh_distances(model, sampler, sigmas, fit, x, flow=False):
    """RMSE to the fit's teacher (Heun on the refined grid) on fresh noise x, stock and with the fitted λ."""
    grid = teacher_grid(sigmas, landing_sigmas(sampler, sigmas, flow).double(), fit.scale).float()
    teacher = dode.sample(model, x, grid, fit.teacher, disable=True)
    stock = dode.sample(model, x, sigmas, sampler, flow=flow, disable=True)
    dode_ = dode.sample(model, x, sigmas, sampler, lambdas=fit.lambdas, flow=flow, disable=True)
    return rmse(stock, teacher), rmse(dode_, teacher)


@pytest.mark.parametrize("sampler", NEW)
def test_distill_lowers_the_distance_to_the_teacher_on_fresh_noise(gmm, sampler):
    sigmas = karras(6)
    x = torch.randn(48, 64, generator=torch.Generator().manual_seed(10)) * sigmas[0]
    fit = dode.distill(gmm, x, sigmas, sampler, compare_stock=True, objective="greedy", disable=True)
    assert len(fit.lambdas) == dode.nfe(sampler, sigmas) and torch.isfinite(fit.lambdas).all()
    assert fit.report.rmse_after < fit.report.rmse_stock
    fresh = torch.randn(128, 64, generator=torch.Generator().manual_seed(11)) * sigmas[0]
    stock, fitted = fresh_distances(gmm, sampler, sigmas, fit, fresh)
    assert fitted < 0.95 * stock


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "dpmpp_3m"])
def test_distill_in_flow_mode(flow_gmm, sampler):
    """The fit takes the student's flow option: its teacher grid holds the flow-mode 2S midpoints."""
    sigmas = flow_grid(6, shift=3.0)
    x = torch.randn(48, 64, generator=torch.Generator().manual_seed(12))
    fit = dode.distill(flow_gmm, x, sigmas, sampler, flow=True, compare_stock=True, objective="greedy", disable=True)
    assert fit.report.rmse_after < fit.report.rmse_stock
    torch.testing.assert_close(fit.samples, dode.sample(flow_gmm, x, sigmas, sampler, lambdas=fit.lambdas, flow=True,
                                                        disable=True))
    stock, fitted = fresh_distances(flow_gmm, sampler, sigmas, fit, torch.randn(128, 64, generator=torch.Generator().manual_seed(13)),
                                    flow=True)
    assert fitted < stock
