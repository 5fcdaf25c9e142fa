"""webui/schedule.py: the schedule type "D-ODE fitted": the fitted grid, else Karras."""
import logging
from types import SimpleNamespace

import pytest
import torch

from webui_host import Gaussian, args, generate, make_p, save_fitted, stub_karras


FITTED = torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0])  # the first σ is the model's σ_max


def save_two_fits(webui):
    """Fitted schedules for euler, 5 steps: one at cfg 7, another grid at cfg 5."""
    other = torch.tensor([14.6146, 5.0, 2.0, 0.5, 0.06, 0.0])
    folder = webui.tmp / "models" / "D-ODE"
    entry = save_fitted(webui, folder / "fit.safetensors", "euler", FITTED, model=webui.ident)
    entry5 = save_fitted(webui, folder / "fit5.safetensors", "euler", other, model=webui.ident, cfg=5.0)
    return entry, entry5


def test_fitted_schedule_gives_the_fitted_grid_and_its_lambda(webui):
    entry, _ = save_two_fits(webui)
    p = make_p(scheduler="D-ODE fitted")
    out, sigmas, x = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, FITTED.float())
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    assert torch.equal(out, ref)
    info = p.extra_generation_params
    assert info["D-ODE schedule"] == "fitted fit.safetensors#0" and info["D-ODE λ"] == "fit.safetensors#0"
    assert info["Schedule type"] == "D-ODE fitted"


def test_fitted_schedule_entry_is_picked_by_the_cfg_scale(webui):
    _, entry5 = save_two_fits(webui)
    p = make_p(scheduler="D-ODE fitted", cfg_scale=5.0)
    generate(webui, "Euler (D-ODE)", p, 5)
    assert p.extra_generation_params["D-ODE schedule"] == "fitted fit5.safetensors#0"
    assert p.extra_generation_params["D-ODE λ"] == "fit5.safetensors#0" and entry5.cfg == 5.0


def test_fitted_schedule_gives_a_stock_sampler_the_grid_alone(webui):
    save_two_fits(webui)
    p = make_p(scheduler="D-ODE fitted")
    _, sigmas, _ = generate(webui, "Euler", p, 5)
    assert torch.equal(sigmas, FITTED.float()) and "D-ODE λ" not in p.extra_generation_params
    assert p.extra_generation_params["D-ODE schedule"] == "fitted fit.safetensors#0"


def test_fitted_schedule_as_the_hires_schedule_type(webui):
    save_two_fits(webui)
    p = make_p(scheduler="Automatic", hr_scheduler="D-ODE fitted", is_hr_pass=True)
    _, sigmas, _ = generate(webui, "Euler", p, 5)
    assert torch.equal(sigmas, FITTED.float())
    assert p.extra_generation_params["Hires D-ODE schedule"] == "fitted fit.safetensors#0"


def test_fitted_schedule_in_the_sidecar_follows_the_sidecar_rules(webui):
    fitted = FITTED
    save_fitted(webui, webui.ckpt.with_name("toy.dode.safetensors"), "euler", fitted, model="fp1-comfyui")
    p = make_p(scheduler="D-ODE fitted")
    _, sigmas, _ = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, fitted.float())
    assert p.extra_generation_params["D-ODE schedule"] == "fitted toy.dode.safetensors#0"
    lora = {"lora": [SimpleNamespace(items=["detail_slider", "0.8"])]}
    p = make_p(scheduler="D-ODE fitted", extra_network_data=lora)  # another model: not this bare-checkpoint fit
    _, sigmas, _ = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, stub_karras(5)) and p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"


MISSES = [  # (label, generation settings, steps, what the log names)
    ("Euler (D-ODE)", {}, 6, "5 steps, not 6"),  # another step count
    ("Euler (D-ODE)", {"cfg_scale": 4.5}, 5, "cfg 7, not 4.5"),  # another CFG scale
    ("Heun (D-ODE)", {}, 5, None),  # another sampler
    ("DPM++ SDE", {}, 5, "DPM++ SDE has no D-ODE solver"),  # a sampler without a D-ODE solver
]


def test_fitted_schedule_fallback_is_the_webuis_own_karras_grid(webui):
    _, stock, _ = generate(webui, "Euler (D-ODE)", make_p(scheduler="Karras"), 5)
    assert torch.equal(stock, stub_karras(5))


@pytest.mark.parametrize("label, kw, steps, message", MISSES, ids=["steps", "cfg", "sampler", "no solver"])
def test_fitted_schedule_falls_back_to_karras(webui, caplog, label, kw, steps, message):
    save_fitted(webui, webui.tmp / "models" / "D-ODE" / "fit.safetensors", "euler", FITTED, model=webui.ident)
    p = make_p(scheduler="D-ODE fitted", **kw)
    with caplog.at_level(logging.WARNING, "dode.webui"):
        out, sigmas, x = generate(webui, label, p, steps)
    assert torch.equal(sigmas, stub_karras(steps)), label
    assert p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"
    if out is not None:
        name = webui.ext.names.labels()[label]
        assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler=name, extra_args=args(p.cfg_scale),
                                                  disable=True))
    assert message is None or message in caplog.text
    told = [text for text in p.comments if text.startswith("D-ODE fitted: ")]
    assert told == [f"D-ODE fitted: this image used the stock Karras schedule: no fitted schedule for this "
                    f"checkpoint, sampler, steps and CFG scale; turn on Settings → D-ODE → \"Auto-distill λ\" and "
                    f"generate again to fit one."]


def first_schedule_fit(webui):
    """The first generation on "D-ODE fitted" with auto-distill on (scale 2): (p, samples, σ grid, x, λ file)."""
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    p1 = make_p(scheduler="D-ODE fitted")
    out1, grid1, x = generate(webui, "Euler (D-ODE)", p1, 5)
    return p1, out1, grid1, x, webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"


def test_auto_distill_fits_the_schedule_on_d_ode_fitted(webui, caplog):
    with caplog.at_level(logging.WARNING, "dode.webui"):
        p1, _, grid1, _, path = first_schedule_fit(webui)
    assert "auto-distill fits one now, starting from Karras" in caplog.text
    assert "using the stock Karras" not in caplog.text  # the image got the fitted schedule
    assert [text for text in p1.comments if "Karras" in text] == []
    assert p1.extra_generation_params["D-ODE schedule"].startswith("fitted ")
    assert torch.equal(grid1, stub_karras(5))  # nothing fitted yet: the fit starts from the Karras grid
    (entry,) = webui.lambdas.load_lambdas(path)
    assert (entry.schedule, entry.objective, entry.sampler, entry.cfg) == ("fitted", "final", "euler", 7.0)
    assert entry.steps == 5 and not torch.allclose(entry.sigmas, grid1.double())
    assert entry.sigmas[0].item() == pytest.approx(grid1[0].item()) and entry.sigmas[-1] == 0
    assert entry.sigmas[-2] >= 0.0292 * (1 - 1e-5)  # inside the model's σ range


def test_schedule_fit_is_the_cores_fit_on_the_models_sigma_range(webui):
    _, out1, grid1, x, path = first_schedule_fit(webui)
    (entry,) = webui.lambdas.load_lambdas(path)
    inner = Gaussian().inner_model.sigmas
    fit = webui.lambdas.distill(Gaussian(), x, grid1, sampler="euler", scale=2, extra_args=args(), disable=True,
                                schedule=True, sigma_range=(float(inner[0]), float(inner[-1])))
    assert torch.equal(entry.sigmas, fit.sigmas) and torch.equal(out1, fit.samples)  # the model's σ range reached it


def test_schedule_fit_infotext(webui):
    p1, *_, path = first_schedule_fit(webui)
    info = p1.extra_generation_params
    assert info["D-ODE schedule"] == f"fitted {path.name}#0" and info["D-ODE λ"] == f"{path.name}#0"
    assert info["D-ODE fit"].startswith("final + schedule, ")


def test_schedule_fit_halves_the_distance_to_the_teacher(webui):
    _, out1, grid1, x, _ = first_schedule_fit(webui)
    stock = webui.core.sample(Gaussian(), x, grid1, sampler="euler", extra_args=args(), disable=True)
    teacher = webui.core.sample(Gaussian(), x, webui.lambdas.teacher_grid(grid1, grid1, 2),
                                sampler=webui.lambdas.DEFAULT_TEACHER, extra_args=args(), disable=True)
    assert (out1 - teacher).norm() < 0.5 * (stock - teacher).norm()


def test_the_next_generation_samples_on_the_fitted_schedule_without_a_fit(webui):
    _, out1, _, _, path = first_schedule_fit(webui)
    (entry,) = webui.lambdas.load_lambdas(path)
    p2 = make_p(scheduler="D-ODE fitted")
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
