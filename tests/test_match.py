"""Which entry serves a request (lambdas/match.py): strict lookup, fitted schedules, the nearest entry."""
import re
from dataclasses import replace

import pytest
import torch

import dode
from dode.lambdas import LambdaEntry
from dode.samplers import karras_sigmas
from lambda_factory import entry, fitted


def test_lookup_is_strict_and_explains_near_misses():
    entries = [entry(), entry("heun")]
    sigmas = karras_sigmas(5)
    assert dode.find_lambdas(entries, "heun", sigmas, model="model-a", cfg=7.0) is entries[1]
    assert dode.find_lambdas(entries, "euler", sigmas.float(), cfg=7.0) is entries[0]
    cases = [
        (dict(sampler="dpmpp_2m"), "sampler euler"),
        (dict(model="model-b"), "another model"),
        (dict(sigmas=karras_sigmas(6)), "5 steps, not 6"),
        (dict(sigmas=karras_sigmas(5, sigma_max=14.6)), "another σ grid"),
        (dict(cfg=4.0), "cfg 7, not 4"),
        (dict(cfg=None), "cfg 7, not none"),
    ]
    for change, message in cases:
        request = dict(sampler="euler", sigmas=sigmas, model="model-a", cfg=7.0) | change
        with pytest.raises(dode.LambdaNotFound, match=message):
            dode.find_lambdas(entries, **request)


def test_a_fitted_entry_is_found_by_its_grid_and_by_find_schedule():
    fit, given = fitted(), entry()
    entries = [given, fit]
    assert dode.find_lambdas(entries, "euler", fit.sigmas.float(), model="model-a", cfg=7.0) is fit
    assert dode.find_lambdas(entries, "euler", karras_sigmas(5), model="model-a", cfg=7.0) is given
    assert dode.find_schedule(entries, "euler", 5, 80.0, model=["x", "model-a"], cfg=7.0) is fit
    assert dode.find_schedule(entries, "euler", 5, 80.0 * (1 + 1e-7), 0.0, model="model-a", cfg=7.0) is fit
    cases = [
        (dict(sampler="heun"), "sampler euler, not heun"),
        (dict(steps=6), "5 steps, not 6"),
        (dict(sigma_max=14.6), "first σ 80, not 14.6"),
        (dict(sigma_last=5e-9), "last σ 0, not 5e-09"),
        (dict(cfg=4.0), "cfg 7, not 4"),
        (dict(model="model-b"), r"another model \(model-a\)"),
    ]
    for change, message in cases:
        request = dict(sampler="euler", steps=5, sigma_max=80.0, model="model-a", cfg=7.0) | change
        with pytest.raises(dode.LambdaNotFound, match=rf"nearest entry: euler, 5 steps.*fitted schedule.*"
                                                      rf"which differs in {message}\. "):
            dode.find_schedule(entries, **request)
    with pytest.raises(dode.LambdaNotFound, match="differs in a given grid, not a fitted schedule"):
        dode.find_schedule([given], "euler", 5, 80.0, cfg=7.0)
    with pytest.raises(dode.LambdaNotFound, match="it is empty"):
        dode.find_schedule([], "euler", 5, 80.0)


def test_a_final_zero_never_matches_a_final_positive_sigma():
    zero = entry()
    tiny = LambdaEntry("heun", torch.cat([karras_sigmas(5)[:-1], torch.tensor([5e-9])]), torch.zeros(10), cfg=7.0)
    with pytest.raises(dode.LambdaNotFound, match="another σ grid"):
        dode.find_lambdas([tiny], "heun", karras_sigmas(5), cfg=7.0)
    with pytest.raises(dode.LambdaNotFound, match="another σ grid"):
        dode.find_lambdas([zero], "euler", tiny.sigmas, cfg=7.0)
    assert not zero.same_grid(tiny.sigmas) and zero.same_grid(karras_sigmas(5).float())


def test_a_fit_made_under_another_model_sampling_is_a_clear_miss():
    flow = "ModelSamplingDiscreteFlow+CONST(shift={}, multiplier={}, σ 0.0029→1, type=FLOW)"
    fit = fitted(sigma_max=1.0, metrics={"model_sampling": flow.format(3, 1000)})
    assert "shift 3, model model-a" in fit.describe()
    assert dode.find_schedule([fit], "euler", 5, 1.0, model="model-a", cfg=7.0) is fit  # no key asked: any
    request = dict(sampler="euler", steps=5, sigma_max=1.0, model="model-a", cfg=7.0)
    assert dode.lambdas.match.find([fit], dode.lambdas.match.Request.fitted(**request,
                                                                            sampling=flow.format(3, 1000))) is fit
    for sampling, message in ((flow.format(6, 1000), "which differs in shift 3, not 6"),
                              (flow.format(3, 1), f"model sampling {flow.format(3, 1000)}, not {flow.format(3, 1)}")):
        with pytest.raises(dode.LambdaNotFound, match=re.escape(message)):
            dode.lambdas.match.find([fit], dode.lambdas.match.Request.fitted(**request, sampling=sampling))
    grid = dode.lambdas.match.Request.grid("euler", fit.sigmas, "model-a", 7.0, flow.format(8, 1000))
    with pytest.raises(dode.LambdaNotFound, match=r"cfg 7, shift 8, model model-a in the λ entries: .*differs in shift 3, not 8"):
        dode.lambdas.match.find([fit], grid)
    weights = {"model_base": "file:ab", "model_patches": "none"}
    same = fitted(sigma_max=1.0, model="fp1-shift3", metrics={"model_sampling": flow.format(3, 1000), **weights})
    resampled = dode.lambdas.match.Request.fitted(**{**request, "model": "fp1-shift6"},
                                                  sampling=flow.format(6, 1000), weights="file:ab; none")
    assert dode.lambdas.match.differences(same, resampled) == ["shift 3, not 6"]  # the same weights: no other model
    other = replace(resampled, weights="file:cd; none")
    assert dode.lambdas.match.differences(same, other) == ["another model (fp1-shift3)", "shift 3, not 6"]
    unrecorded = fitted(sigma_max=1.0)  # a WebUI entry: no model sampling recorded, the model identity decides
    assert dode.lambdas.match.find([unrecorded], grid) is unrecorded
