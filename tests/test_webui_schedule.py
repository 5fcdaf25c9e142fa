"""webui/schedule.py: the schedule type "D-ODE fitted": the fitted grid, else Karras."""
import logging
from types import SimpleNamespace

import pytest
import torch

from webui_host import Gaussian, args, generate, make_p, save_fitted, stub_karras


def test_fitted_schedule_gives_the_fitted_grid_and_its_lambda(webui):
    fitted = torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0])  # the first σ is the model's σ_max
    other = torch.tensor([14.6146, 5.0, 2.0, 0.5, 0.06, 0.0])
    folder = webui.tmp / "models" / "D-ODE"
    entry = save_fitted(webui, folder / "fit.safetensors", "euler", fitted, model=webui.ident)
    entry5 = save_fitted(webui, folder / "fit5.safetensors", "euler", other, model=webui.ident, cfg=5.0)
    p = make_p(scheduler="D-ODE fitted")
    out, sigmas, x = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, fitted.float())
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    assert torch.equal(out, ref)
    info = p.extra_generation_params
    assert info["D-ODE schedule"] == "fitted fit.safetensors#0" and info["D-ODE λ"] == "fit.safetensors#0"
    assert info["Schedule type"] == "D-ODE fitted"
    p = make_p(scheduler="D-ODE fitted", cfg_scale=5.0)  # the CFG scale picks the entry
    generate(webui, "Euler (D-ODE)", p, 5)
    assert p.extra_generation_params["D-ODE schedule"] == "fitted fit5.safetensors#0"
    assert p.extra_generation_params["D-ODE λ"] == "fit5.safetensors#0" and entry5.cfg == 5.0
    p = make_p(scheduler="D-ODE fitted")  # a stock sampler gets the grid alone
    _, sigmas, _ = generate(webui, "Euler", p, 5)
    assert torch.equal(sigmas, fitted.float()) and "D-ODE λ" not in p.extra_generation_params
    assert p.extra_generation_params["D-ODE schedule"] == "fitted fit.safetensors#0"
    p = make_p(scheduler="Automatic", hr_scheduler="D-ODE fitted", is_hr_pass=True)  # the Hires schedule type
    _, sigmas, _ = generate(webui, "Euler", p, 5)
    assert torch.equal(sigmas, fitted.float())
    assert p.extra_generation_params["Hires D-ODE schedule"] == "fitted fit.safetensors#0"


def test_fitted_schedule_in_the_sidecar_follows_the_sidecar_rules(webui):
    fitted = torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0])
    save_fitted(webui, webui.ckpt.with_name("toy.dode.safetensors"), "euler", fitted, model="fp1-comfyui")
    p = make_p(scheduler="D-ODE fitted")
    _, sigmas, _ = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, fitted.float())
    assert p.extra_generation_params["D-ODE schedule"] == "fitted toy.dode.safetensors#0"
    lora = {"lora": [SimpleNamespace(items=["detail_slider", "0.8"])]}
    p = make_p(scheduler="D-ODE fitted", extra_network_data=lora)  # another model: not this bare-checkpoint fit
    _, sigmas, _ = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, stub_karras(5)) and p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"


def test_fitted_schedule_falls_back_to_karras(webui, caplog):
    karras_p = make_p(scheduler="Karras")
    _, stock, _ = generate(webui, "Euler (D-ODE)", karras_p, 5)
    save_fitted(webui, webui.tmp / "models" / "D-ODE" / "fit.safetensors", "euler",
                torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0]), model=webui.ident)
    for label, kw, steps in [("Euler (D-ODE)", {}, 6),  # another step count
                             ("Euler (D-ODE)", {"cfg_scale": 4.5}, 5),  # another CFG scale
                             ("Heun (D-ODE)", {}, 5),  # another sampler
                             ("DPM++ SDE", {}, 5)]:  # a sampler without a D-ODE solver
        p = make_p(scheduler="D-ODE fitted", **kw)
        with caplog.at_level(logging.WARNING, "dode.webui"):
            out, sigmas, x = generate(webui, label, p, steps)
        assert torch.equal(sigmas, stub_karras(steps)), label
        assert p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"
        if out is not None:
            name = webui.ext.names.labels()[label]
            assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler=name,
                                                      extra_args=args(p.cfg_scale), disable=True))
    assert torch.equal(stock, stub_karras(5))  # the fallback is the WebUI's own Karras grid
    assert "5 steps, not 6" in caplog.text and "cfg 7, not 4.5" in caplog.text
    assert "DPM++ SDE has no D-ODE solver" in caplog.text


def test_auto_distill_fits_the_schedule_on_d_ode_fitted(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    p1 = make_p(scheduler="D-ODE fitted")
    out1, grid1, x = generate(webui, "Euler (D-ODE)", p1, 5)
    assert torch.equal(grid1, stub_karras(5))  # nothing fitted yet: the fit starts from the Karras grid
    path = webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"
    (entry,) = webui.lambdas.load_lambdas(path)
    assert (entry.schedule, entry.objective, entry.sampler, entry.cfg) == ("fitted", "final", "euler", 7.0)
    assert entry.steps == 5 and not torch.allclose(entry.sigmas, grid1.double())
    assert entry.sigmas[0].item() == pytest.approx(grid1[0].item()) and entry.sigmas[-1] == 0
    assert entry.sigmas[-2] >= 0.0292 * (1 - 1e-5)  # inside the model's σ range
    inner = Gaussian().inner_model.sigmas
    fit = webui.lambdas.distill(Gaussian(), x, grid1, sampler="euler", scale=2, extra_args=args(), disable=True,
                                schedule=True, sigma_range=(float(inner[0]), float(inner[-1])))
    assert torch.equal(entry.sigmas, fit.sigmas) and torch.equal(out1, fit.samples)  # the model's σ range reached it
    info = p1.extra_generation_params
    assert info["D-ODE schedule"] == f"fitted {path.name}#0" and info["D-ODE λ"] == f"{path.name}#0"
    assert info["D-ODE fit"].startswith("final + schedule, ")
    stock = webui.core.sample(Gaussian(), x, grid1, sampler="euler", extra_args=args(), disable=True)
    teacher = webui.core.sample(Gaussian(), x, webui.lambdas.teacher_grid(grid1, grid1, 2),
                                sampler=webui.lambdas.DEFAULT_TEACHER, extra_args=args(), disable=True)
    assert (out1 - teacher).norm() < 0.5 * (stock - teacher).norm()
    p2 = make_p(scheduler="D-ODE fitted")  # the next generation samples on the fitted grid with its λ, no fit
    out2, grid2, _ = generate(webui, "Euler (D-ODE)", p2, 5)
    assert torch.equal(grid2, entry.sigmas.float()) and "D-ODE fit" not in p2.extra_generation_params
    assert p2.extra_generation_params["D-ODE schedule"] == f"fitted {path.name}#0"
    torch.testing.assert_close(out2, out1, rtol=0, atol=1e-4)


def test_auto_distill_without_fit_schedule_keeps_the_karras_grid(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_fit_schedule = False
    webui.shared.opts.dode_scale = 2
    p = make_p(scheduler="D-ODE fitted")
    _, grid, _ = generate(webui, "Euler (D-ODE)", p, 5)
    (entry,) = webui.lambdas.load_lambdas(webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors")
    assert entry.schedule == "given" and torch.equal(entry.sigmas, grid.double())
    assert p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"
    p = make_p(scheduler="D-ODE fitted")
    generate(webui, "Euler (D-ODE)", p, 5)  # still no fitted schedule: Karras again, now with its λ
    assert p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"
    assert p.extra_generation_params["D-ODE λ"].endswith("#0") and "D-ODE fit" not in p.extra_generation_params
