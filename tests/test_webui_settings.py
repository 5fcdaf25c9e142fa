"""webui/settings.py: the settings section "D-ODE" and what it asks of a fit."""
import sys

from webui_host import PKG, karras, make_p, run


def test_settings_section(webui):
    labels = webui.shared.opts.data_labels
    fit = sys.modules[PKG + ".lambdas.fit"]
    assert set(webui.ext.settings.OPTION_DEFAULTS) <= set(labels)
    assert all(labels[key].section == ("dode", "D-ODE") for key in webui.ext.settings.OPTION_DEFAULTS)
    # the defaults are the core's, and each choice list is what the adapter accepts
    assert (labels["dode_teacher"].default, labels["dode_scale"].default, labels["dode_objective"].default) == \
        ("DPM++ 2M", fit.DEFAULT_SCALE, fit.DEFAULT_OBJECTIVE) and fit.DEFAULT_TEACHER == "dpmpp_2m"
    assert labels["dode_auto_distill"].default is False and labels["dode_distill_tails"].default is False
    assert labels["dode_objective"].component_args["choices"] == list(fit.OBJECTIVES)
    assert labels["dode_teacher"].component_args["choices"] == ["Euler", "Heun", "DPM++ 2M", "DPM++ 2S", "DPM++ 3M",
                                                                 "iPNDM", "DEIS"]  # the WebUI's labels, not ids
    assert labels["dode_miss_policy"].component_args["choices"] == list(webui.ext.settings.MISS_POLICIES)
    assert labels["dode_miss_policy"].default == "stock sampler, log once"


def test_a_teacher_is_chosen_by_its_label_and_an_old_id_still_works(webui):
    for chosen, teacher in (("DPM++ 3M", "dpmpp_3m"), ("ipndm", "ipndm"), ("nonsense", "dpmpp_2m")):
        webui.shared.opts.dode_teacher = chosen
        assert webui.ext.settings.fit_settings(False)[0] == teacher


def test_fit_settings_reach_the_fit(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_teacher, webui.shared.opts.dode_scale = "Heun", 3
    webui.shared.opts.dode_objective = "greedy"
    p = make_p()
    run(webui, "Euler (D-ODE)", p, karras(5))
    (entry,) = webui.lambdas.load_lambdas(distill_path(webui))
    assert (entry.teacher, entry.scale, entry.objective, entry.schedule) == ("heun", 3, "greedy", "given")
    assert p.extra_generation_params["D-ODE fit"].startswith("greedy, heun x3, rmse ")


def distill_path(webui):
    return webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"


def test_the_objective_setting_applies_to_the_next_fit(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_objective = "greedy"
    run(webui, "Euler (D-ODE)", make_p(), karras(5))
    webui.shared.opts.dode_objective = "final"
    run(webui, "Euler (D-ODE)", make_p(), karras(6))
    assert [e.objective for e in webui.lambdas.load_lambdas(distill_path(webui))] == ["greedy", "final"]


def test_an_unknown_objective_setting_gives_the_default(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_objective = "no such objective"  # a hand-edited config: the default, said once
    run(webui, "Euler (D-ODE)", make_p(), karras(7))
    assert webui.lambdas.load_lambdas(distill_path(webui))[-1].objective == \
        sys.modules[PKG + ".lambdas.fit"].DEFAULT_OBJECTIVE
