"""nodes/options.py and D-ODE Model Options: the miss policy and λ a MODEL carries."""
import logging

import pytest
import torch

from comfy_host import distill, ksample, make_model, with_options


def test_policy_error_and_auto_distill(clean, caplog):
    model = make_model(clean)
    with pytest.raises(RuntimeError, match="no λ for"):
        ksample(clean, with_options(clean, model, on_missing="error"), "euler_dode")
    assert "dode" not in model.model_options  # the patch node works on a clone

    plain = ksample(clean, model, "dpmpp_2m_dode", batch=2)  # a miss: λ = 0
    auto = with_options(clean, model, on_missing="auto_distill")
    with caplog.at_level(logging.INFO, logger="dode"):
        first = ksample(clean, auto, "dpmpp_2m_dode", batch=2)
    assert "auto-distilling" in caplog.text
    assert "dpmpp_2m_dode: fitting on 2 latents; a fit on fewer than 16 may not hold" in caplog.text
    assert "give the first run of these settings a batch of 16 or more" in caplog.text
    (path,) = clean.lambda_dir.glob("*-dpmpp_2m.safetensors")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dode"):
        second = ksample(clean, auto, "dpmpp_2m_dode", batch=2)  # now a store hit with the fitted λ
    assert "λ from" in caplog.text and torch.allclose(first, second, atol=1e-5) and "fitting on" not in caplog.text
    assert not torch.equal(first, plain)


def test_attached_lambdas_and_identity_mode(clean, caplog):
    model = make_model(clean)
    _, lambdas, *_ = distill(clean, model, save=False)
    attached = with_options(clean, model, lambdas=lambdas)
    with caplog.at_level(logging.INFO, logger="dode"):
        hit = ksample(clean, attached, "euler_dode")
    assert "λ from Distill λ" in caplog.text
    assert not torch.equal(hit, ksample(clean, model, "euler"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dode"):
        ksample(clean, attached, "euler_dode", steps=5)  # does not fit: a warning, then the store, then stock
    assert "the λ set attached to the model does not fit" in caplog.text and "(λ = 0): no λ for" in caplog.text

    lora = model.clone()
    lora.add_patches({"diffusion_model.proj.weight": ("diff", (torch.full((4, 4, 1, 1), 0.01),))}, 0.8)
    full = clean.identity.fingerprint
    assert full(lora).key != full(model).key
    assert full(lora, "ignore_patches").key == full(model, "ignore_patches").key
