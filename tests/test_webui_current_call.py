"""webui/current_call.py: the recorded generation reaches only its own schedule call."""
from copy import copy

import torch

from webui_host import generate, karras, make_p, save_fitted


def test_fitted_schedule_without_this_generation_recorded_is_karras(webui):
    from modules import sd_schedulers
    save_fitted(webui, webui.tmp / "models" / "D-ODE" / "fit.safetensors", "euler",
                torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0]), model=webui.ident)
    p = make_p(scheduler="D-ODE fitted")
    generate(webui, "Euler (D-ODE)", p, 5)  # recorded: p and its sampler
    other = webui.sd_samplers.create_sampler("Euler (D-ODE)", None)  # a sampler the scripts never saw
    sigmas = sd_schedulers.schedulers_map["D-ODE fitted"].function(n=5, sigma_min=0.0292, sigma_max=14.6146,
                                                                   inner_model=other.model_wrap, device="cpu")
    assert torch.equal(sigmas, karras(5)) and p.extra_generation_params["D-ODE schedule"] == "fitted fit.safetensors#0"


def test_xyz_cells_do_not_inherit_the_infotext_of_the_cell_before(webui):
    """The X/Y/Z plot runs each cell on copy(p): one extra_generation_params dict for all cells."""
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    p = make_p(scheduler="D-ODE fitted")
    generate(webui, "Euler (D-ODE)", p, 4)
    assert {"D-ODE schedule", "D-ODE λ", "D-ODE fit"} <= set(p.extra_generation_params)
    cell = copy(p)
    cell.scheduler = "Karras"
    generate(webui, "Euler (D-ODE)", cell, 4)  # λ exists for nothing on Karras yet: fitted now, no schedule
    assert cell.extra_generation_params is p.extra_generation_params
    assert "D-ODE schedule" not in cell.extra_generation_params and "D-ODE fit" in cell.extra_generation_params
    cell = copy(p)
    cell.scheduler = "Karras"
    generate(webui, "Euler", cell, 4)  # a stock sampler: no D-ODE infotext at all
    assert not [k for k in cell.extra_generation_params if k.startswith("D-ODE")]
    hires = copy(p)
    hires.extra_generation_params = {"D-ODE λ": "first.safetensors#0", "Hires D-ODE λ": "old.safetensors#3"}
    hires.is_hr_pass, hires.hr_scheduler = True, "Karras"
    generate(webui, "Euler", hires, 4)  # the Hires pass clears only its own keys
    assert hires.extra_generation_params == {"D-ODE λ": "first.safetensors#0"}
