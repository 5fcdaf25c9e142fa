"""nodes/context.py: what a sampler call learns from ComfyUI (flow, loader file, guider)."""
import pytest
import torch

from comfy_host import cond, distill, latent, make_model, told
from dode.samplers import flow_option, get_solver


def test_flow_models_pass_comfyui_offset_first_sigma(clean):
    flow = make_model(clean, flow=True)
    ms = flow.model.model_sampling
    assert clean.context.comfy_flow(ms) == pytest.approx(ms.percent_to_sigma(1e-4))
    assert 0 < clean.context.comfy_flow(ms) < 1
    assert clean.context.comfy_flow(make_model(clean).model.model_sampling) is False
    # only the solvers whose stock update depends on it take it (test_lambda_runs_pass_comfyui_flow_option)
    offset = clean.context.comfy_flow(ms)
    kwargs = [flow_option(get_solver(name), flow) for name, flow in (("dpmpp_3m", offset), ("euler", offset),
                                                                      ("dpmpp_2s", False))]
    assert kwargs == [{"flow": offset}, {}, {}]


def test_lambda_files_are_named_after_the_loaded_model_file(clean):
    """v0.3.x records no file in the MODEL: the running prompt's UNETLoader / checkpoint loader names it."""
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3/my_unet.safetensors"}},
              "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "x.safetensors"}},
              "5": {"class_type": "DODEDistillLambdas", "inputs": {"model": ["2", 0]}}}
    clean.ui.prompt_queue.currently_running = {0: (0, "p1", prompt, {}, ["5"])}
    clean.ui.last_node_id = "5"
    assert clean.context.loader_file_name() == "my_unet"
    assert clean.context.loader_file_name(prompt, "1") == "my_unet"
    assert clean.context.loader_file_name({"5": {"inputs": {"model": ["9", 0]}}}, "5") is None
    assert clean.context.loader_file_name(prompt, None) == "my_unet"  # node unknown: the prompt's only loader
    two = {**prompt, "7": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other.safetensors"}}}
    assert clean.context.loader_file_name(two, None) is None  # which one? not a guess
    distill(clean, make_model(clean))
    (path,) = clean.lambda_dir.glob("*.safetensors")
    assert path.name.startswith("my_unet-") and path.name.endswith("-euler.safetensors")
    from dode import load_lambdas
    assert load_lambdas(path)[0].metrics["model_name"] == "my_unet"


def test_dual_cfg_guider_is_refused_clearly(clean):
    """λ is keyed by one CFG scale; Guider_DualCFG has two (its .cfg stays 1), so no λ is looked up or fitted."""
    model = make_model(clean)
    _, lambdas, *_ = distill(clean, model)

    class DualGuider(clean.samplers.CFGGuider):
        cfg1, cfg2 = 3.0, 2.0

    def run(sampler):
        guider = DualGuider(model)
        guider.set_conds(cond(0.5), cond(-0.5))
        guider.set_cfg(1.0)
        lat = latent(1)["samples"]
        return guider.sample(clean.sample.prepare_noise(lat, 1), lat, sampler,
                             clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0))

    assert torch.equal(run(clean.samplers.ksampler("euler_dode")), run(clean.samplers.ksampler("euler")))
    assert told(clean, "DualGuider has two CFG scales (cfg1 3, cfg2 2)")
    with pytest.raises(RuntimeError, match="two CFG scales"):
        run(clean.v3.DODESampler.execute("euler", "(λ store lookup)", True, lambdas=lambdas).args[0])
