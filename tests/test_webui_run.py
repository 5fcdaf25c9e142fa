"""webui/run.py: one sampler call: tails, the Hires pass, the miss policies, a refiner, flow models."""
import pytest
import torch

from webui_host import Gaussian, args, karras, make_p, run, save_entry


def test_a_full_schedule_entry_never_serves_a_tail(webui):
    webui.shared.opts.dode_auto_distill = True
    full = karras(10)
    tail = full[4:]  # img2img with denoise ~0.6: the last steps of the 10-step schedule
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "full.safetensors", "euler", full, model=webui.ident)
    p = make_p(init_images=["image"])
    out, model, x = run(webui, "Euler (D-ODE)", p, tail)
    stock = webui.core.sample(Gaussian(), x, tail, sampler="euler", extra_args=args(), disable=True)
    assert torch.equal(out, stock) and p.extra_generation_params["D-ODE λ"] == "none"
    assert model.calls == len(tail) - 1 and not list(folder.glob("*.dode.safetensors"))  # no distill on a tail
    (told,) = p.comments
    assert told.endswith('turn on Settings → D-ODE → "Also auto-distill for img2img and Hires fix passes" to fit one.')


def test_an_exact_tail_entry_serves_the_tail(webui):
    webui.shared.opts.dode_auto_distill = True
    full = karras(10)
    tail = full[4:]
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "full.safetensors", "euler", full, model=webui.ident)
    entry = save_entry(webui, folder / "tail.safetensors", "euler", tail, model=webui.ident, value=0.3)
    p = make_p(init_images=["image"])
    out, _, x = run(webui, "Euler (D-ODE)", p, tail)
    ref = webui.core.sample(Gaussian(), x, tail, sampler="euler", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    assert torch.equal(out, ref) and p.extra_generation_params["D-ODE λ"] == "tail.safetensors#0"


def test_hires_pass_has_its_own_infotext_and_can_distill_tails_when_asked(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_distill_tails = True
    webui.shared.opts.dode_scale = 2
    tail = karras(12)[6:]
    p = make_p(init_images=None)
    p.extra_generation_params["D-ODE λ"] = "first-pass.safetensors#0"
    p.is_hr_pass = True
    run(webui, "Euler (D-ODE)", p, tail)
    assert p.extra_generation_params["D-ODE λ"] == "first-pass.safetensors#0"
    assert p.extra_generation_params["Hires D-ODE λ"].endswith(".dode.safetensors#0")
    assert "Hires D-ODE fit" in p.extra_generation_params


def test_error_policy_raises_for_full_schedules(webui):
    webui.shared.opts.dode_miss_policy = "error"
    with pytest.raises(RuntimeError, match=r"Euler \(D-ODE\) \(full schedule\): no λ for euler"):
        run(webui, "Euler (D-ODE)", make_p(), karras(6))


def test_error_policy_runs_a_tail_stock(webui):
    webui.shared.opts.dode_miss_policy = "error"
    p = make_p(init_images=["image"])
    run(webui, "Euler (D-ODE)", p, karras(10)[5:])
    assert p.extra_generation_params["D-ODE λ"] == "none"


def test_a_switching_refiner_runs_stock(webui):
    sigmas = karras(6)
    save_entry(webui, webui.tmp / "models" / "D-ODE" / "x.safetensors", "euler", sigmas, model=webui.ident)
    p = make_p(refiner_checkpoint_info=object(), refiner_switch_at=0.8)
    out, _, x = run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"
    assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True))


def test_a_refiner_that_never_switches_keeps_the_lambda(webui):
    sigmas = karras(6)
    save_entry(webui, webui.tmp / "models" / "D-ODE" / "x.safetensors", "euler", sigmas, model=webui.ident)
    p = make_p(refiner_checkpoint_info=object(), refiner_switch_at=1.0)
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "x.safetensors#0"


def test_flow_models_pass_flow_to_the_core(webui):
    labels = {name: label for label, name in webui.ext.names.labels().items()}
    name = next(n for n in ("dpmpp_3m", "dpmpp_2s") if n in labels)
    sigmas = torch.tensor(torch.linspace(1.0, 0.02, 7).tolist() + [0.0])
    p = make_p()
    out, model, x = run(webui, labels[name], p, sigmas, sigma_max=1.0)  # a Flux/SD3-like model: σ in (0, 1]
    assert webui.ext.generation.is_flow(model)
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler=name, extra_args=args(), disable=True, flow=True)
    assert torch.equal(out, ref)
    assert not torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler=name, extra_args=args(),
                                                  disable=True))
    assert not webui.ext.generation.is_flow(Gaussian())
