"""nodes/sampling.py: the ``<name>_dode`` dropdown samplers, stock without λ, λ from the store."""
import logging

import pytest
import torch

from comfy_host import custom, ksample, make_model


def test_dropdown_registration_in_place_and_idempotent(cx):
    from dode import SAMPLER_NAMES
    cs = cx.samplers
    assert cs.KSampler.SAMPLERS is cs.SAMPLER_NAMES
    labels = [f"{n}_dode" for n in SAMPLER_NAMES]
    for label in labels:
        assert cs.SAMPLER_NAMES.count(label) == 1 and cs.KSAMPLER_NAMES.count(label) == 1
    fns = {label: getattr(cx.kds, f"sample_{label}") for label in labels}
    assert all(fn.dode_solver == label[:-5] for label, fn in fns.items())
    before = (list(cs.SAMPLER_NAMES), list(cs.KSAMPLER_NAMES))
    assert cx.sampling.register_samplers() == labels
    cx.nodes.setup()
    assert (list(cs.SAMPLER_NAMES), list(cs.KSAMPLER_NAMES)) == before
    assert fns == {label: getattr(cx.kds, f"sample_{label}") for label in labels}
    assert cx.nodes.REGISTERED_SAMPLERS == labels and not cx.nodes.PROBLEMS


def test_foreign_sampler_of_the_same_name_is_left_alone(cx, caplog):
    kd = cx.kds
    ours = kd.sample_euler_dode

    def foreign(model, x, sigmas, **kwargs):
        return x

    kd.sample_euler_dode = foreign
    try:
        with caplog.at_level(logging.WARNING, logger="dode"):
            names = cx.sampling.register_samplers()
        assert "euler_dode" not in names and kd.sample_euler_dode is foreign
        assert "sample_euler_dode already exists" in caplog.text
    finally:
        kd.sample_euler_dode = ours


def test_dode_by_name_without_lambdas_is_stock_and_says_how_to_distill(clean, caplog):
    model = make_model(clean)
    with caplog.at_level(logging.INFO, logger="dode"):
        dode = ksample(clean, model, "euler_dode")
    assert torch.equal(dode, ksample(clean, model, "euler"))
    assert "euler_dode: stock euler (λ = 0): no λ for" in caplog.text and "Distill λ" in caplog.text
    assert not clean.lambda_dir.exists()  # created lazily, on the first write only


HOST = {"euler": ("euler", {}), "heun": ("heun", {}), "dpmpp_2m": ("dpmpp_2m", {}),
        "dpmpp_2s": ("dpmpp_2s_ancestral", {"eta": 0.0}), "dpmpp_3m": ("dpmpp_3m_sde", {"eta": 0.0}),
        "ipndm": ("ipndm", {}), "deis": ("deis", {})}


def core_sampler(cx, name, lambdas=None, flow=False):
    """A SAMPLER that runs the dode core directly (what the adapter must reproduce)."""
    import dode

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return dode.sample(model, x, sigmas, name, lambdas=lambdas, extra_args=extra_args, callback=callback,
                           disable=disable, flow=flow)

    return cx.samplers.KSAMPLER(fn)


@pytest.mark.parametrize("flow", [False, True])
def test_every_dode_name_without_lambdas_is_the_hosts_stock_sampler(clean, flow):
    from dode import SAMPLER_NAMES
    model = make_model(clean, flow=flow)
    sigmas = clean.v3.compute_sigmas(model, "euler", "simple" if flow else "karras", 6, 1.0)
    assert sorted(HOST) == sorted(SAMPLER_NAMES)
    for name in SAMPLER_NAMES:
        host, options = HOST[name]
        stock = custom(clean, model, clean.samplers.ksampler(host, options), sigmas)
        by_name = custom(clean, model, clean.samplers.ksampler(f"{name}_dode"), sigmas)
        assert torch.equal(by_name, stock), name
    # the host's DEIS is not the core's in the last bits, so the match above is the host's code, not the core's
    deis_core = custom(clean, model, core_sampler(clean, "deis"), sigmas)
    assert not torch.equal(deis_core, custom(clean, model, clean.samplers.ksampler("deis"), sigmas))
    assert torch.allclose(deis_core, custom(clean, model, clean.samplers.ksampler("deis"), sigmas), atol=1e-3)


@pytest.mark.parametrize("name", ["dpmpp_2s", "dpmpp_3m"])
def test_lambda_runs_pass_comfyui_flow_option(clean, name):
    """On a rectified-flow model the D-ODE DPM++ 2S/3M with λ get ComfyUI's offset first σ (flow=), as the host's
    stock samplers use it; without it they would be another sampler."""
    from dode import LambdaEntry, nfe
    model = make_model(clean, flow=True)
    sigmas = clean.v3.compute_sigmas(model, "euler", "simple", 6, 1.0)
    offset = clean.context.comfy_flow(model.model.model_sampling)
    lambdas = [0.25] * nfe(name, sigmas)
    entry = LambdaEntry(sampler=name, sigmas=sigmas, lambdas=lambdas, model="elsewhere", cfg=3.0)
    node = clean.v3.DODESampler.execute(name, "(λ store lookup)", False,
                                        lambdas=clean.options.LambdaSet((entry,))).args[0]
    with_lambda = custom(clean, model, node, sigmas)
    assert torch.equal(with_lambda, custom(clean, model, core_sampler(clean, name, lambdas, flow=offset), sigmas))
    assert not torch.allclose(with_lambda, custom(clean, model, core_sampler(clean, name, lambdas), sigmas),
                              atol=1e-4)
