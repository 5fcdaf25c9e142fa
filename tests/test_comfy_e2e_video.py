"""End-to-end on a video model: the pack inside a real ComfyUI, headless on CPU, with a tiny random Wan 2.1 t2v model.

Skipped unless ``COMFYUI_DIR`` points at a ComfyUI checkout (``COMFYUI_PYTHON``: the Python that runs it), like
tests/test_comfy_e2e.py, whose HTTP helpers it uses. The test builds a temporary base directory with this repository
as ``custom_nodes/dode``, a test-only Wan conditioning node (4096-wide, no text encoder) and a tiny random Wan 2.1
model (built with ComfyUI's own WanModel class, detected as WAN21_T2V) in ``models/diffusion_models``, starts
``main.py --cpu`` on a free port and checks, on 5-D latents (B, 16, T, H, W) from EmptyHunyuanLatentVideo with the
flow shift set by ModelSamplingSD3:

- KSampler ``euler_dode`` / ``dpmpp_2m_dode`` without λ give ``euler`` / ``dpmpp_2m``'s latent bit for bit;
- Distill λ with fit_schedule on a batch of 2 video latents, then KSampler ``dpmpp_2m_dode`` on the ``dode``
  scheduler samples the fitted grid with its λ (log; = SamplerCustom fed by Distill λ's SIGMAS and SAMPLER), ≠ stock;
- under another shift (a second ModelSamplingSD3), neither the fitted grid nor λ is used: the ``dode`` scheduler gives
  ``simple`` and the sampler runs stock, bit for bit, and the log names the shift that differs.
"""
import os
import re
import time

import pytest
import torch

from test_comfy_e2e import comfy_base, comfyui

torch.set_num_threads(1)

COMFY = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_DIR to a ComfyUI checkout to run the e2e suite")

MODEL = "tiny_wan.safetensors"
STEPS, CFG, SCHEDULER = 4, 2.0, "simple"
SHIFT, OTHER_SHIFT = 5.0, 3.0  # the fit's shift (ModelSamplingSD3), and another one (the checkpoint's own is 8)
WIDTH = HEIGHT = 32            # latent 4 × 4
LENGTH = 9                     # latent frames (9 - 1) // 4 + 1 = 3
LATENT = (16, 3, HEIGHT // 8, WIDTH // 8)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python, base = comfy_base(tmp_path_factory.mktemp("comfy_video_base"), "make_tiny_wan.py", MODEL)
    with comfyui(python, base) as srv:
        yield srv


def base_graph(batch=1, shift=SHIFT):
    """The Wan model under ModelSamplingSD3(shift) as node 11, conditioning 2/3, an empty video latent as node 4."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": MODEL, "weight_dtype": "default"}},
        "11": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": shift}},
        "2": {"class_type": "DodeE2EWanConditioning", "inputs": {"seed": 1, "tokens": 8}},
        "3": {"class_type": "DodeE2EWanConditioning", "inputs": {"seed": 2, "tokens": 8}},
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": WIDTH, "height": HEIGHT,
                                                                  "length": LENGTH, "batch_size": batch}},
    }


def ksampler(sampler, seed, prefix, scheduler=SCHEDULER, shift=SHIFT):
    graph = base_graph(shift=shift)
    graph["5"] = {"class_type": "KSampler", "inputs": {
        "model": ["11", 0], "seed": seed, "steps": STEPS, "cfg": CFG, "sampler_name": sampler,
        "scheduler": scheduler, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
        "denoise": 1.0}}
    graph["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}}
    return graph


def run_with_log(server, graph):
    """The latent of ``graph``'s SaveLatent (node 9) and the log lines the run wrote."""
    start = len(server.log())
    latent = server.latent(server.run(graph))
    return latent, server.log()[start:]


# test 1 runs before any fit exists (file order): without λ, *_dode is the stock sampler
@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
def test_dode_without_lambdas_is_bit_identical_to_stock_on_video(server, name):
    stock = server.latent(server.run(ksampler(name, 5, f"video_stock_{name}")))
    dode, log = run_with_log(server, ksampler(f"{name}_dode", 5, f"video_dode0_{name}"))
    assert stock.shape == (1, *LATENT) and torch.isfinite(stock).all()
    assert torch.equal(stock, dode), f"{name}_dode without λ differs from {name}: {(stock - dode).abs().max()}"
    assert f"[dode] {name}_dode: stock {name} (λ = 0): no λ for" in log


def test_distill_with_schedule_then_dode_scheduler_on_video(server):
    from dode import load_lambdas
    before = server.lambda_files()
    start = time.time()
    # Distill λ (fit_schedule) on 2 video latents, and in the same prompt SamplerCustom on its SIGMAS and SAMPLER
    graph = base_graph(batch=2)
    graph["5"] = {"class_type": "DODEDistillLambdas", "inputs": {
        "model": ["11", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 11,
        "cfg": CFG, "sampler_name": "dpmpp_2m", "scheduler": SCHEDULER, "steps": STEPS, "denoise": 1.0,
        "teacher": "heun", "scale": 4, "save": True, "objective": "final", "fit_schedule": True}}
    graph["7"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": WIDTH, "height": HEIGHT,
                                                                      "length": LENGTH, "batch_size": 1}}
    graph["6"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["11", 0], "add_noise": True, "noise_seed": 43, "cfg": CFG, "positive": ["2", 0],
        "negative": ["3", 0], "sampler": ["5", 0], "sigmas": ["5", 5], "latent_image": ["7", 0]}}
    graph["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 2], "filename_prefix": "video_teacher"}}
    graph["10"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "video_custom"}}
    entry = server.run(graph, timeout=600)
    fit_seconds = time.time() - start
    assert fit_seconds < 60, f"Distill λ on 2 video latents took {fit_seconds:.0f} s"
    teacher = server.latent(entry)
    assert teacher.shape == (2, *LATENT) and torch.isfinite(teacher).all()
    custom = server.latent(entry, node="10")
    (path,) = [f for f in server.lambda_files() if f not in before]
    fitted = [e for e in load_lambdas(path) if e.schedule == "fitted"]
    assert len(fitted) == 1 and fitted[0].steps == STEPS and fitted[0].cfg == CFG
    assert fitted[0].sigmas[-1] == 0 and fitted[0].sigmas[0] == pytest.approx(1.0, rel=1e-5)  # flow: σ_max = 1
    assert f"shift={SHIFT:g}" in (fitted[0].sampling or ""), fitted[0].sampling

    # the stock KSampler, dpmpp_2m_dode on the dode scheduler: the fitted grid with its λ (= SamplerCustom above)
    dode, log = run_with_log(server, ksampler("dpmpp_2m_dode", 43, "video_sched_fitted", scheduler="dode"))
    assert "dode scheduler: fitted σ grid from" in log and "dpmpp_2m_dode: λ from" in log, log[-3000:]
    assert "(fitted schedule)" in log
    assert dode.shape == (1, *LATENT)
    assert torch.equal(dode, custom)
    stock = server.latent(server.run(ksampler("dpmpp_2m", 43, "video_sched_stock")))
    assert (dode - stock).abs().max() > 1e-4


def test_another_shift_does_not_get_the_fit(server):
    """The fit above was made under shift 5; under shift 3 its grid and λ must not be used: the dode scheduler falls
    back to simple and dpmpp_2m_dode runs stock dpmpp_2m (the pack's default on_missing policy), bit for bit, and the
    log says why, naming the shift."""
    dode, log = run_with_log(server, ksampler("dpmpp_2m_dode", 43, "video_other_shift", scheduler="dode",
                                              shift=OTHER_SHIFT))
    stock = server.latent(server.run(ksampler("dpmpp_2m", 43, "video_other_shift_stock", shift=OTHER_SHIFT)))
    assert "dode scheduler: fitted σ grid from" not in log and "dpmpp_2m_dode: λ from" not in log, log[-3000:]
    assert torch.equal(dode, stock), f"under shift {OTHER_SHIFT:g} the shift-{SHIFT:g} fit was used"
    assert "dode scheduler: no fitted schedule for" in log and "using the stock 'simple' scheduler" in log, log[-3000:]
    assert "[dode] dpmpp_2m_dode: stock dpmpp_2m (λ = 0): no λ for" in log, log[-3000:]
    # the nearest entry and what differs in it: "... which differs in shift 5, not 3", not in the model
    shift_named = re.compile(rf"which differs in .*\bshift {SHIFT:g}, not (shift )?{OTHER_SHIFT:g}\b")
    lines = [line for line in log.splitlines() if "[dode]" in line]
    assert any(shift_named.search(line) and "dode scheduler" in line for line in lines), lines
    assert not any("another model" in line for line in lines if shift_named.search(line)), lines  # same weights
    assert any(shift_named.search(line) and "dpmpp_2m_dode" in line for line in lines), lines

    # the same sampler on the stock grid under the other shift: no λ either (the fit's λ is for shift 5)
    dode, log = run_with_log(server, ksampler("dpmpp_2m_dode", 44, "video_other_shift_simple", shift=OTHER_SHIFT))
    stock = server.latent(server.run(ksampler("dpmpp_2m", 44, "video_other_shift_simple_stock",
                                              shift=OTHER_SHIFT)))
    assert torch.equal(dode, stock)
    assert "[dode] dpmpp_2m_dode: stock dpmpp_2m (λ = 0): no λ for" in log, log[-3000:]
