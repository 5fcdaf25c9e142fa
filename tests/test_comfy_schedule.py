"""nodes/schedule.py: the ``dode`` scheduler: the fitted grid, else ``simple`` bit for bit."""
import torch

import dode

from comfy_host import custom, distill, fitted_entry, ksample, make_model, told


def test_dode_scheduler_registration_in_place_and_idempotent(cx):
    cs = cx.samplers
    assert cs.KSampler.SCHEDULERS is cs.SCHEDULER_NAMES and cs.SCHEDULER_NAMES.count("dode") == 1
    assert cs.SCHEDULER_HANDLERS["dode"].handler is cx.schedule.dode_scheduler
    assert cs.SCHEDULER_HANDLERS["dode"].use_ms
    before = (list(cs.SCHEDULER_NAMES), dict(cs.SCHEDULER_HANDLERS))
    assert cx.schedule.register_scheduler() == "dode"
    cx.nodes.setup()
    assert (list(cs.SCHEDULER_NAMES), dict(cs.SCHEDULER_HANDLERS)) == before
    assert cx.nodes.REGISTERED_SCHEDULERS == ["dode"]
    ours = cs.SCHEDULER_HANDLERS["dode"]
    cs.SCHEDULER_HANDLERS["dode"] = cs.SchedulerHandler(lambda ms, steps: None)  # another pack's "dode"
    try:
        assert cx.schedule.register_scheduler() is None
    finally:
        cs.SCHEDULER_HANDLERS["dode"] = ours


def basic_scheduler(model, steps):
    """What BasicScheduler does: the model it was given, the scheduler by name."""
    import comfy.samplers
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "dode", steps)


def test_dode_scheduler_without_a_fit_is_simple_bit_for_bit_and_says_so_once(clean):
    model = make_model(clean)
    for sampler in ("euler_dode", "euler"):
        for _ in range(2):
            assert torch.equal(ksample(clean, model, sampler, scheduler="dode"),
                               ksample(clean, model, sampler, scheduler="simple"))
    misses = told(clean, "dode scheduler: no fitted schedule for model, euler_dode, 6 steps, cfg 3")
    assert len(misses) == 1 and "using the stock 'simple' scheduler" in misses[0]


def fitted_in_store(clean):
    """A model, its fitted-schedule entry saved in fits.safetensors, and the fitted grid."""
    model = make_model(clean)
    entry = fitted_entry(clean, model)
    clean.store.store().add(clean.lambda_dir / "fits.safetensors", entry)
    return model, entry, entry.sigmas.float()


def test_dode_scheduler_serves_the_fitted_grid_and_its_lambda(clean):
    model, entry, grid = fitted_in_store(clean)
    with_lambda = custom(clean, model, clean.v3.DODESampler.execute(
        "euler", "(λ store lookup)", True, lambdas=clean.options.LambdaSet((entry,))).args[0], grid)
    assert torch.equal(ksample(clean, model, "euler_dode", scheduler="dode"), with_lambda)
    assert told(clean, "dode scheduler: fitted σ grid from fits.safetensors (euler, 6 steps, cfg 3)")
    assert told(clean, "euler_dode: λ from fits.safetensors (fitted schedule)")


def test_dode_scheduler_gives_a_plain_sampler_the_fitted_grid_alone(clean):
    model, _, grid = fitted_in_store(clean)
    assert torch.equal(ksample(clean, model, "euler", scheduler="dode"),
                       custom(clean, model, clean.samplers.ksampler("euler"), grid))
    assert not torch.equal(ksample(clean, model, "euler", scheduler="dode"),
                           ksample(clean, model, "euler", scheduler="simple"))


def test_dode_scheduler_on_another_cfg_is_stock_and_names_the_difference(clean):
    model, _, _ = fitted_in_store(clean)
    assert torch.equal(ksample(clean, model, "euler", scheduler="dode", cfg=4.0),
                       ksample(clean, model, "euler", scheduler="simple", cfg=4.0))
    (miss,) = told(clean, "no fitted schedule for model, euler, 6 steps, cfg 4")
    assert "which differs in cfg 3, not 4" in miss


def test_dode_scheduler_under_another_shift_is_stock_and_names_the_shifts(clean):
    model = make_model(clean, flow=True)  # shift 3
    clean.store.store().add(clean.lambda_dir / "fits.safetensors", fitted_entry(clean, model))
    (saved,) = dode.load_lambdas(clean.lambda_dir / "fits.safetensors")
    assert "shift 3" in saved.describe() and "shift=3" in saved.metrics["model_sampling"]
    shifted = model.clone()
    shifted.add_object_patch("model_sampling", type(model.model.model_sampling)(shift=6.0))  # ModelSamplingSD3 6
    assert torch.equal(ksample(clean, shifted, "euler_dode", scheduler="dode"),
                       ksample(clean, shifted, "euler_dode", scheduler="simple"))
    (miss,) = told(clean, "dode scheduler: no fitted schedule for model, euler_dode, 6 steps, cfg 3")
    assert "which differs in shift 3, not 6)" in miss and "another model" not in miss  # the same weights
    assert "using the stock 'simple' scheduler" in miss
    assert not torch.equal(ksample(clean, model, "euler_dode", scheduler="dode"),
                           ksample(clean, model, "euler_dode", scheduler="simple"))  # its own shift: the fit


def test_basic_scheduler_gets_the_fitted_grid_of_its_model(clean):
    model, _, grid = fitted_in_store(clean)  # BasicScheduler knows the model only: whatever the sampler and cfg
    assert torch.equal(basic_scheduler(model, 6), grid)
    assert torch.equal(basic_scheduler(model, 5), clean.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "simple", 5))
    assert torch.equal(basic_scheduler(make_model(clean, seed=4), 6), clean.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "simple", 6))  # another model: no fit


def test_distill_fit_schedule_outputs_sigmas_and_a_model_the_dode_scheduler_serves(clean):
    model = make_model(clean)
    sampler, lambdas, _, report, _, sigmas, fitted_model = distill(clean, model, objective="final",
                                                                   fit_schedule=True, scale=4, outputs=7)
    (entry,) = lambdas.entries
    assert entry.schedule == "fitted" and entry.objective == "final" and torch.equal(sigmas, entry.sigmas.float())
    stock = clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0)
    assert sigmas[0] == stock[0] and sigmas[-1] == 0 and not torch.allclose(sigmas, stock)
    assert "σ: " in report and "fitted schedule" in report
    (saved,) = clean.lambda_dir.glob("*.safetensors")
    from dode import load_lambdas
    assert load_lambdas(saved)[0].schedule == "fitted"
    expected = custom(clean, model, sampler, sigmas, seed=5)
    # KSampler fed by the MODEL output, on the dode scheduler (karras was the start; the dode scheduler's first σ is
    # simple's, the same σ_max)
    assert torch.equal(ksample(clean, fitted_model, "euler_dode", seed=5, scheduler="dode"), expected)
    assert told(clean, "euler_dode: λ from Distill λ (euler, 6 steps) (fitted schedule)")
    # and the model from the checkpoint finds the same fit in the store
    assert torch.equal(ksample(clean, model, "euler_dode", seed=5, scheduler="dode"), expected)
