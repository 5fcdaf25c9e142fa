"""webui/distill.py: auto-distill inside the sampler call, its file, and its failures."""
import logging
import sys

import pytest
import torch

from webui_host import PKG, Gaussian, args, karras, make_p, run


def first_use(webui):
    """The first generation with auto-distill on (scale 4): (p, samples, model, x, σ grid, λ file)."""
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 4
    sigmas = karras(6)
    p = make_p()
    out, model, x = run(webui, "Euler (D-ODE)", p, sigmas)
    return p, out, model, x, sigmas, webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"


def test_auto_distill_on_first_use_writes_the_file_and_the_infotext(webui):
    p1, *_, path = first_use(webui)
    assert path.is_file()
    assert p1.extra_generation_params["D-ODE λ"] == f"{path.name}#0"
    teacher_name = webui.lambdas.DEFAULT_TEACHER
    objective = sys.modules[PKG + ".lambdas.fit"].DEFAULT_OBJECTIVE
    assert p1.extra_generation_params["D-ODE fit"].startswith(f"{objective}, {teacher_name} x4, rmse")
    assert "D-ODE schedule" not in p1.extra_generation_params  # a Karras grid chosen by the user is kept


def test_a_fit_on_a_small_batch_says_so_under_the_image_and_in_the_log(webui, caplog):
    with caplog.at_level(logging.WARNING, "dode.webui"):
        p1, *_ = first_use(webui)  # the stub generation's batch: 2 latents
    (told,) = [text for text in p1.comments if "fitted on a batch of 2" in text]
    assert "D-ODE λ files" in told and "16 or more" in told
    assert "fitting on 2 latents; a fit on fewer than 16 may not hold" in caplog.text


def test_auto_distill_records_the_settings_in_the_entry(webui):
    *_, sigmas, path = first_use(webui)
    teacher_name = webui.lambdas.DEFAULT_TEACHER
    objective = sys.modules[PKG + ".lambdas.fit"].DEFAULT_OBJECTIVE
    (entry,) = webui.lambdas.load_lambdas(path)
    assert entry.model == webui.ident and entry.cfg == 7.0 and entry.teacher == teacher_name and entry.scale == 4
    assert entry.objective == objective and entry.schedule == "given" and torch.equal(entry.sigmas, sigmas.double())


class Recorder:
    """The WebUI's shared.state, recording every (sampling_step, sampling_steps, textinfo) a fit shows."""

    def __init__(self, steps):
        object.__setattr__(self, "seen", [])
        object.__setattr__(self, "values", {"sampling_step": 0, "sampling_steps": steps, "textinfo": None,
                                            "interrupted": False, "skipped": False})

    def __getattr__(self, name):
        return self.values[name]

    def __setattr__(self, name, value):
        self.values[name] = value
        if name == "textinfo":
            self.seen.append((self.sampling_step, self.sampling_steps, value))


def test_the_fit_moves_the_progress_bar_with_a_percent_and_says_its_cost(webui, monkeypatch):
    state = Recorder(6)
    monkeypatch.setattr(webui.shared, "state", state)
    first_use(webui)
    steps = [step for step, _, _ in state.seen]
    assert len(state.seen) > 10 and steps == sorted(steps) and 0 < steps[0] < steps[-1]
    assert len({total for _, total, _ in state.seen}) == 1  # one bar over the teacher and the fit
    assert all(text.startswith("D-ODE: fitting for these settings (first use, up to ") and "× this generation)" in text
               and text.endswith("%") for _, _, text in state.seen)
    assert ": teacher, " in state.seen[0][2] and ": fit, " in state.seen[-1][2]
    percents = [int(text.rsplit(" ", 1)[1][:-1]) for _, _, text in state.seen]
    assert percents == sorted(percents) and percents[0] < 50 <= percents[-1] <= 100
    assert state.sampling_step == state.sampling_steps == 6  # the generation's own bar again, at its end


def test_teacher_calls_do_not_advance_the_webui_step(webui):
    _, _, model1, _, sigmas, _ = first_use(webui)
    assert model1.calls > 2 * (len(sigmas) - 1) and model1.step == len(sigmas) - 1  # teacher calls don't count


def test_the_next_generation_reuses_the_fit(webui):
    _, out1, _, _, sigmas, path = first_use(webui)
    p2 = make_p()
    out2, model2, _ = run(webui, "Euler (D-ODE)", p2, sigmas)
    assert model2.calls == len(sigmas) - 1 and "D-ODE fit" not in p2.extra_generation_params
    assert p2.extra_generation_params["D-ODE λ"] == f"{path.name}#0"
    torch.testing.assert_close(out2, out1, rtol=0, atol=1e-5)


def test_the_fit_lands_closer_to_the_teacher_than_stock(webui):
    _, out1, _, x, sigmas, _ = first_use(webui)
    teacher_name = webui.lambdas.DEFAULT_TEACHER
    teacher = webui.core.sample(Gaussian(), x, webui.lambdas.teacher_grid(sigmas, sigmas[1:], 4), sampler=teacher_name,
                                extra_args=args(), disable=True)
    stock = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True)
    assert (out1 - teacher).norm() < (stock - teacher).norm()


def test_another_cfg_scale_adds_a_second_entry_to_the_file(webui):
    *_, sigmas, path = first_use(webui)
    p3 = make_p(cfg_scale=5.0)  # another CFG scale is another combination: a second entry in the same file
    run(webui, "Euler (D-ODE)", p3, sigmas)
    assert p3.extra_generation_params["D-ODE λ"] == f"{path.name}#1"


def test_a_fit_that_cannot_be_saved_still_serves_its_image(webui, caplog):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    path = webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"damaged")  # the file auto-distill would add to
    sigmas = karras(5)
    p = make_p()
    with caplog.at_level(logging.ERROR, "dode.webui"):
        out, _, x = run(webui, "Euler (D-ODE)", p, sigmas)
    fit = webui.lambdas.distill(Gaussian(), x, sigmas, sampler="euler", scale=2, extra_args=args(), disable=True)
    assert torch.equal(out, fit.samples) and path.read_bytes() == b"damaged"
    assert p.extra_generation_params["D-ODE λ"] == "not saved" and "D-ODE fit" in p.extra_generation_params
    assert "λ fitted but not saved" in caplog.text and path.name in caplog.text
    (told,) = [text for text in p.comments if "not saved" in text]
    assert told.startswith("D-ODE: λ fitted but not saved (") and path.name in told
    assert "until it restarts" in told and "--models-dir on a writable folder" in told


def test_interrupted_distill_writes_nothing(webui):
    webui.shared.opts.dode_auto_distill = True
    from modules.sd_samplers_common import InterruptedException
    p = make_p()
    with pytest.raises(InterruptedException):
        run(webui, "Euler (D-ODE)", p, karras(6), interrupt_at=5)
    assert p.extra_generation_params["D-ODE λ"] == "interrupted during the fit (nothing saved)"
    assert not (webui.tmp / "models" / "D-ODE").exists() or not list((webui.tmp / "models" / "D-ODE").glob("*.dode*"))


def test_unusable_grid_for_distill_falls_back_to_stock(webui, caplog):
    webui.shared.opts.dode_auto_distill = True
    sigmas = torch.tensor([14.6, 0.0])  # one step: nothing to fit
    p = make_p()
    with caplog.at_level(logging.WARNING, "dode.webui"):
        out, model, x = run(webui, "Euler (D-ODE)", p, sigmas)
    stock = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True)
    assert torch.equal(out, stock) and not torch.equal(out, x)
    assert p.extra_generation_params["D-ODE λ"] == "none" and "D-ODE fit" not in p.extra_generation_params
    assert "auto-distill failed" in caplog.text and model.calls == 1


def test_flow_models_auto_distill_in_flow_mode(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    webui.shared.opts.dode_objective = "greedy"
    sigmas = torch.tensor(torch.linspace(1.0, 0.02, 5).tolist() + [0.0])
    out, _, x = run(webui, "DPM++ 2S (D-ODE)", make_p(), sigmas, sigma_max=1.0)
    fit = webui.lambdas.distill(Gaussian(sigma_max=1.0), x, sigmas, sampler="dpmpp_2s", teacher=webui.lambdas.DEFAULT_TEACHER,
                                scale=2, extra_args=args(), disable=True, flow=True, objective="greedy",
                                compare_stock=True)
    not_flow = webui.lambdas.distill(Gaussian(sigma_max=1.0), x, sigmas, sampler="dpmpp_2s", scale=2,
                                     extra_args=args(), disable=True, objective="greedy")
    assert torch.equal(out, fit.samples) and not torch.allclose(out, not_flow.samples)
    (entry,) = webui.lambdas.load_lambdas(webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors")
    torch.testing.assert_close(entry.lambdas, fit.lambdas, rtol=0, atol=0)
