"""webui/sources.py: which λ file serves a generation (models/D-ODE, the sidecar), and a miss."""
import logging

import torch

from webui_host import EXPECTED, Gaussian, args, karras, make_p, run, save_entry


def test_miss_runs_the_stock_sampler_and_logs_once(webui, caplog):
    sigmas = karras(8)
    for label, name in EXPECTED.items():
        p = make_p()
        with caplog.at_level(logging.WARNING, "dode.webui"):
            out, _, x = run(webui, label, p, sigmas)
            run(webui, label, make_p(), sigmas)
        ref = webui.core.sample(Gaussian(), x, sigmas, sampler=name, extra_args=args(), disable=True)
        assert torch.equal(out, ref)
        assert p.extra_generation_params["D-ODE λ"] == "none"
        assert caplog.text.count(f"D-ODE: {label} (full schedule), using the stock sampler: no λ for {name}") == 1
        assert list(p.comments) == [f"D-ODE: {label} ran as the stock sampler (λ = 0): no λ fitted for this "
                                    "checkpoint, steps, schedule type and CFG scale; turn on Settings → D-ODE → "
                                    "\"Auto-distill λ\" and generate again to fit one."]


def test_a_silent_miss_says_nothing(webui):
    webui.shared.opts.dode_miss_policy = "stock sampler, silent"
    p = make_p()
    run(webui, "Euler (D-ODE)", p, karras(8))
    assert not p.comments


def test_lambda_from_models_dir_is_used_with_infotext(webui):
    sigmas = karras(8)
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "other.safetensors", "euler", sigmas, model="0000000000")  # another checkpoint
    entry = save_entry(webui, folder / "mine.safetensors", "euler", sigmas, model=webui.ident)
    p = make_p()
    out, model, x = run(webui, "Euler (D-ODE)", p, sigmas)
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    stock = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True)
    assert torch.equal(out, ref) and not torch.equal(out, stock)
    assert p.extra_generation_params["D-ODE λ"] == "mine.safetensors#0"
    assert model.calls == len(sigmas) - 1


def test_lookup_needs_the_exact_grid_cfg_and_sampler(webui):
    sigmas = karras(8)
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "a.safetensors", "euler", karras(8, sigma_min=0.03), model=webui.ident)
    save_entry(webui, folder / "b.safetensors", "euler", sigmas, model=webui.ident, cfg=5.0)
    save_entry(webui, folder / "c.safetensors", "heun", sigmas, model=webui.ident)
    p = make_p()
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"


def test_sidecar_next_to_the_checkpoint(webui):
    sigmas = karras(6)
    side = webui.ckpt.with_name("toy.dode.safetensors")
    entry = save_entry(webui, side, "dpmpp_2m", sigmas, model="comfyui-fingerprint", value=0.2)
    p = make_p()
    out, _, x = run(webui, "DPM++ 2M (D-ODE)", p, sigmas)
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler="dpmpp_2m", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    assert torch.equal(out, ref) and p.extra_generation_params["D-ODE λ"] == "toy.dode.safetensors#0"


def test_bad_lambda_file_does_not_break_sampling(webui, caplog):
    folder = webui.tmp / "models" / "D-ODE"
    folder.mkdir(parents=True)
    (folder / "broken.safetensors").write_bytes(b"garbage")
    webui.ckpt.with_name("toy.dode.safetensors").write_bytes(b"garbage")
    sigmas = karras(5)
    p = make_p()
    with caplog.at_level(logging.WARNING, "dode.webui"):
        out, _, x = run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"
    assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True))
    assert "broken.safetensors" in caplog.text and "toy.dode.safetensors" in caplog.text  # each skipped file named
    skipped = [text for text in p.comments if text.startswith("D-ODE: skipped the λ file ")]
    assert len(skipped) == 2 and any("broken.safetensors: not a readable safetensors file" in t for t in skipped)
    assert not any(str(webui.tmp) in t for t in skipped)  # the file's name, not its path on the server
    assert any("toy.dode.safetensors: " in t for t in skipped)


def test_sidecar_refuses_fits_made_with_patches_or_extra_networks(webui):
    sigmas = karras(6)
    side = webui.ckpt.with_name("toy.dode.safetensors")
    n = webui.core.nfe("euler", sigmas)
    patched = webui.lambdas.LambdaEntry(sampler="euler", sigmas=sigmas, lambdas=torch.full([n], 0.2), cfg=7.0,
                                        model="fp1-comfy", metrics={"model_patches": "1:abcd"})
    with_nets = webui.lambdas.LambdaEntry(sampler="euler", sigmas=sigmas, lambdas=torch.full([n], 0.3), cfg=7.0,
                                          model="0123456789+nets-abc")
    webui.lambdas.save_lambdas(side, [patched, with_nets])
    p = make_p()
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"
