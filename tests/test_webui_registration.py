"""webui/registration.py: the D-ODE samplers and "D-ODE fitted" in the stub WebUI's lists."""
import inspect
import logging

import torch

from webui_host import EXPECTED, Gaussian, args, karras, load_script, make_p, run


def test_registers_every_core_sampler(webui):
    sd = webui.sd_samplers
    names = webui.core.SAMPLER_NAMES
    labels = webui.ext.names.labels()
    assert set(EXPECTED) <= set(labels) and len(labels) == len(names) and set(labels.values()) == set(names)
    for label, name in labels.items():
        data = sd.all_samplers_map[label]
        assert data in sd.all_samplers and data in sd.samplers
        assert sd.samplers_map[label.lower()] == label and f"dode_{name}" not in sd.samplers_map
        assert label in sd.visible_sampler_names()


def test_every_name_a_sampler_lists_runs_that_sampler(webui):
    """The API lists a sampler's name and aliases; the WebUI resolves only names (an alias ran DPM++ 2M)."""
    sd = webui.sd_samplers
    for label in webui.ext.names.labels():
        data = sd.all_samplers_map[label]
        for listed in (data.name, *data.aliases):
            assert sd.get_sampler_and_scheduler(listed, "Automatic")[0] == label
    assert sd.get_sampler_and_scheduler("dode_euler", "Automatic")[0] == "DPM++ 2M"  # what an alias would run


def test_sampler_functions_take_no_parameter_the_webui_injects(webui):
    sd = webui.sd_samplers
    for label in webui.ext.names.labels():
        sampler = sd.create_sampler(label, None)
        params = inspect.signature(sampler.func).parameters
        assert "sigmas" in params and not {"eta", "n", "sigma_min", "sigma_max"} & set(params)


def test_sampler_options_second_order_and_the_stock_twins_schedule(webui):
    sd = webui.sd_samplers
    assert sd.all_samplers_map["Heun (D-ODE)"].options.get("second_order") is True
    assert not sd.all_samplers_map["Euler (D-ODE)"].options.get("second_order")
    assert sd.all_samplers_map["DPM++ 2M (D-ODE)"].options.get("scheduler") == "karras"


def test_labels_are_never_split_into_a_schedule_type(webui):
    sd = webui.sd_samplers
    for label in webui.ext.names.labels():
        for scheduler in ("Automatic", "Karras", "DDIM", "Normal"):
            assert sd.get_sampler_and_scheduler(label, scheduler)[0] == label
        for suffix in webui.ext.registration.scheduler_suffixes():
            assert not label.endswith(" " + suffix)


def test_a_label_ending_in_a_schedule_type_is_refused(webui, monkeypatch, caplog):
    sd = webui.sd_samplers
    assert sd.get_sampler_and_scheduler("Probe DDIM", "Automatic") == ("DPM++ 2M", "DDIM")  # the trap
    monkeypatch.setattr(webui.ext.names, "LABEL_SUFFIX", " DDIM")
    with caplog.at_level(logging.ERROR, "dode.webui"):
        assert webui.ext.registration.register() == []
    assert "Euler DDIM" not in sd.all_samplers_map and "schedule type" in caplog.text


def test_fitted_schedule_type_is_registered(webui):
    from modules import sd_schedulers
    scheduler = sd_schedulers.schedulers_map["D-ODE fitted"]
    assert sd_schedulers.schedulers_map["dode_fitted"] is scheduler and scheduler in sd_schedulers.schedulers
    assert scheduler.need_inner_model and scheduler.function is webui.ext.schedule.fitted_schedule


def test_fitted_schedule_type_survives_the_sampler_and_schedule_split(webui):
    from modules import sd_schedulers
    # the XYZ plot's "Schedule type" axis offers the labels of sd_schedulers.schedulers and sets p.scheduler, which
    # get_sampler_and_scheduler (run on every generation) keeps only if it knows the label
    assert "D-ODE fitted" in [s.label for s in sd_schedulers.schedulers]
    for sampler in ["Euler", "DPM++ 2M", *webui.ext.names.labels()]:
        assert webui.sd_samplers.get_sampler_and_scheduler(sampler, "D-ODE fitted") == (sampler, "D-ODE fitted")
    assert not any(label.endswith(" D-ODE fitted") or label.endswith(" dode_fitted") for label in
                   webui.sd_samplers.all_samplers_map)


def test_fitted_schedule_type_is_registered_once(webui):
    from modules import sd_schedulers
    cached = webui.sd_samplers.get_sampler_and_scheduler("Euler", "Karras")
    assert webui.ext.registration.register_scheduler() is False  # Reload UI: nothing twice
    assert [s.label for s in sd_schedulers.schedulers].count("D-ODE fitted") == 1
    assert webui.sd_samplers.get_sampler_and_scheduler("Euler", "Karras") == cached


def test_reload_ui_registers_nothing_twice(webui):
    sd, cb = webui.sd_samplers, webui.callbacks
    before = len(sd.all_samplers)
    cb.clear_callbacks()  # what Reload UI does before re-importing the scripts
    script = load_script()
    assert script.registered == [] and len(sd.all_samplers) == before
    assert len([s for s in sd.all_samplers if s.name == "Euler (D-ODE)"]) == 1
    assert cb.callbacks_ui_settings == [webui.ext.settings.on_ui_settings]
    assert script.adapter is webui.script.adapter  # the core is not reloaded, so registered closures stay valid


def test_forge_add_sampler_is_used(webui, monkeypatch):
    sd = webui.sd_samplers
    calls = []

    def add_sampler(data):  # Forge rebinds the map instead of mutating it
        calls.append(data.name)
        sd.all_samplers.append(data)
        sd.all_samplers_map = {x.name: x for x in sd.all_samplers}
        sd.set_samplers()
    for label in list(webui.ext.names.labels()):
        sd.all_samplers.remove(sd.all_samplers_map.pop(label))
    sd.set_samplers()
    assert sd.get_sampler_and_scheduler("Euler (D-ODE)", "Automatic")[0] == "DPM++ 2M"  # unknown: cached fallback
    monkeypatch.setattr(sd, "add_sampler", add_sampler, raising=False)
    assert webui.ext.registration.register() == calls == list(webui.ext.names.labels())
    assert webui.ext.registration.register() == []
    assert sd.get_sampler_and_scheduler("Euler (D-ODE)", "Automatic")[0] == "Euler (D-ODE)"  # the cache was cleared
    assert sd.samplers_map["heun (d-ode)"] == "Heun (D-ODE)"
    sigmas = karras(5)
    out, _, x = run(webui, "Heun (D-ODE)", make_p(), sigmas)
    assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler="heun", extra_args=args(), disable=True))
