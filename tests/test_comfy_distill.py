"""nodes/distill.py and Distill λ: the fit, its file, its progress bar, previews, interruption."""
import logging

import pytest
import torch

from comfy_host import cond, custom, distill, ksample, latent, make_model, rmse, told, with_options


def test_distill_saves_and_the_dropdown_uses_it(clean, caplog):
    model = make_model(clean)
    sampler, lambdas, teacher_latent, report, chart = distill(clean, model)
    (path,) = clean.lambda_dir.glob("*.safetensors")
    assert path.name.endswith("-euler.safetensors") and "saved:" in report
    from dode import load_lambdas
    (entry,) = load_lambdas(path)
    assert entry.sampler == "euler" and entry.steps == 6 and entry.cfg == 3.0 and entry.lambdas[1:].abs().sum() > 0
    assert entry.model == lambdas.entries[0].model and entry.metrics["model_name"] == "model"
    assert teacher_latent["samples"].shape == (3, 4, 8, 8)
    assert not list(clean.lambda_dir.glob(".dode-*"))
    # the λ chart: a ComfyUI IMAGE, [1, H, W, 3] float in [0, 1], with ink on it
    assert chart.ndim == 4 and chart.shape[0] == 1 and chart.shape[3] == 3 and chart.shape[1] >= 200
    assert chart.dtype == torch.float32 and 0 <= chart.min() < 0.5 and chart.max() == 1.0
    assert "could not draw" not in caplog.text

    # the teacher latent is the distillation batch's reference: D-ODE lands closer to it than stock does
    noise = clean.sample.prepare_noise(latent(3)["samples"], 11)
    stock = clean.sample.sample_custom(model, noise, 3.0, clean.samplers.ksampler("euler"),
                                       clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0), cond(0.5),
                                       cond(-0.5), latent(3)["samples"], seed=11)
    dode = clean.sample.sample_custom(model, noise, 3.0, sampler,
                                      clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0), cond(0.5),
                                      cond(-0.5), latent(3)["samples"], seed=11)
    assert rmse(dode, teacher_latent["samples"]) < 0.5 * rmse(stock, teacher_latent["samples"])

    # the stock KSampler path with euler_dode now finds λ in the store, and equals the returned SAMPLER
    with caplog.at_level(logging.INFO, logger="dode"):
        by_name = ksample(clean, model, "euler_dode", seed=11, batch=3)
    assert "euler_dode: λ from" in caplog.text
    assert torch.equal(by_name, dode)
    assert not torch.equal(by_name, ksample(clean, model, "euler", seed=11, batch=3))


def test_distill_rejects_bad_settings(clean, caplog):
    model = make_model(clean)
    with pytest.raises(ValueError, match="at least 2 steps"):
        distill(clean, model, steps=1)
    with pytest.raises(ValueError, match="denoise must be > 0"):
        distill(clean, model, denoise=0.0)
    with pytest.raises(ValueError, match="at least 2 steps"):
        distill(clean, model, sigmas=torch.tensor([14.6, 0.0]))
    with caplog.at_level(logging.WARNING, logger="dode"):
        distill(clean, model, batch=1, save=False)
    assert "fitting on 1 latent;" in caplog.text and "Set batch_size 16 or more on the empty latent" in caplog.text
    assert not clean.lambda_dir.exists()


def test_distill_with_custom_sigmas(clean):
    model = make_model(clean)
    sigmas = torch.tensor([10.0, 4.0, 1.5, 0.5, 0.1, 0.0])
    _, lambdas, *_ = distill(clean, model, sigmas=sigmas)
    (entry,) = lambdas.entries
    assert entry.same_grid(sigmas) and entry.metrics["scheduler"] == "custom sigmas"


def assert_interrupt_leaves_no_file(clean, model):
    """Interrupting a distillation mid-way (from the progress bar) raises and leaves no λ file."""
    def interrupting_hook(value, total, preview, node_id=None):
        if value >= 5:
            clean.model_management.interrupt_current_processing(True)
        clean.model_management.throw_exception_if_processing_interrupted()

    clean.utils.PROGRESS_BAR_HOOK = interrupting_hook
    with pytest.raises(clean.model_management.InterruptProcessingException):
        distill(clean, model, steps=4, scale=3)
    assert not clean.lambda_dir.exists() or not list(clean.lambda_dir.iterdir())


def test_distill_progress_and_interrupt_leave_no_file(clean):
    model = make_model(clean)
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total))
        clean.model_management.throw_exception_if_processing_interrupted()

    clean.utils.PROGRESS_BAR_HOOK = hook
    distill(clean, model, steps=4, scale=3, save=False)
    totals = {t for _, t in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1]
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)  # monotone over teacher, stock and student

    assert_interrupt_leaves_no_file(clean, model)


def test_distill_sends_latent_previews_on_the_one_progress_bar(clean, caplog):
    model = make_model(clean)
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total, preview))
        clean.model_management.throw_exception_if_processing_interrupted()

    clean.utils.PROGRESS_BAR_HOOK = hook
    distill(clean, model, steps=4, scale=3, save=False)  # previews off (ComfyUI's default): none sent
    assert seen and all(p is None for *_, p in seen)

    clean.latent_preview.PREVIEW_METHOD = "latent2rgb"
    seen.clear()
    with caplog.at_level(logging.WARNING, logger="dode"):
        distill(clean, model, steps=4, scale=3, save=False)
    assert "previews are off" not in caplog.text
    assert len({t for _, t, _ in seen}) == 1 and seen[-1][0] == seen[-1][1]  # still one bar over all three phases
    assert [v for v, *_ in seen] == sorted(v for v, *_ in seen)
    teacher, stock, student = 4 * 3, 4, 4  # one callback per step of each phase, each with a preview
    assert len(seen) == teacher + stock + student and seen[-1][1] == teacher + stock + student
    fmt, image, size = seen[-1][2]
    assert fmt == "JPEG" and image.size == (8, 8) and size == clean.latent_preview.MAX_PREVIEW_RESOLUTION

    assert_interrupt_leaves_no_file(clean, model)


def test_a_failing_previewer_does_not_stop_distilling(clean, caplog, monkeypatch):
    class Broken:
        def decode_latent_to_preview_image(self, preview_format, x0):
            raise RuntimeError("no decoder")

    monkeypatch.setattr(clean.latent_preview, "get_previewer", lambda device, latent_format: Broken())
    seen = []
    clean.utils.PROGRESS_BAR_HOOK = lambda value, total, preview, node_id=None: seen.append(preview)
    with caplog.at_level(logging.WARNING, logger="dode"):
        _, lambdas, *_ = distill(clean, make_model(clean), steps=4, scale=3, save=False)
    assert lambdas.entries and all(p is None for p in seen)
    assert caplog.text.count("previews are off for this distillation") == 1


def test_final_objective_distill_fills_one_progress_bar(clean):
    """The final fit reports its teacher steps, then its budget of network rows; the bar ends full even when the fit
    converges before the budget."""
    seen = []
    clean.utils.PROGRESS_BAR_HOOK = lambda value, total, preview, node_id=None: seen.append((value, total))
    distill(clean, make_model(clean), steps=4, scale=3, save=False, objective="final")
    assert len({t for _, t in seen}) == 1 and seen[-1][0] == seen[-1][1]
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)


def test_auto_distill_that_cannot_save_keeps_the_fit(clean):
    """A broken file where the fit is to be saved: the paid-for fit is used, kept in memory and not redone."""
    model = make_model(clean)
    auto = with_options(clean, model, on_missing="auto_distill")
    target = clean.store.default_file(clean.context.model_identity(model), "euler")
    with open(target, "wb") as f:
        f.write(b"garbage, not a lambda file")
    first = ksample(clean, auto, "euler_dode", batch=2)
    assert not torch.equal(first, ksample(clean, model, "euler", batch=2))
    (warning,) = told(clean, "λ fitted but not saved")
    assert "keeps it in memory" in warning
    second = ksample(clean, auto, "euler_dode", batch=2)
    assert torch.equal(first, second) and len(told(clean, "auto-distilling")) == 1
    assert told(clean, "euler_dode: λ from an unsaved fit of this process")

    # Distill λ likewise: its outputs carry the fit, the store lookups of this process find it
    steps4 = clean.store.default_file(clean.context.model_identity(model), "heun")
    with open(steps4, "wb") as f:
        f.write(b"garbage")
    sampler, lambdas, _, report, *_ = distill(clean, model, sampler="heun", steps=4)
    assert "not saved (LambdaFileError" in report and told(clean, "Distill λ: λ fitted but not saved")
    sigmas4 = clean.v3.compute_sigmas(model, "heun", "karras", 4, 1.0)
    assert torch.equal(ksample(clean, model, "heun_dode", steps=4), custom(clean, model, sampler, sigmas4))


def test_distill_warns_below_sixteen_latents_only(clean, caplog):
    model = make_model(clean)
    with caplog.at_level(logging.WARNING, logger="dode"):
        distill(clean, model, batch=4, save=False)
    assert "Distill λ: fitting on 4 latents; a fit on fewer than 16 may not hold" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dode"):
        distill(clean, model, batch=16, save=False)
    assert "fitting on" not in caplog.text
