"""nodes/lookup.py: which fit serves a ComfyUI run, and what a miss names."""
import logging

import torch

from comfy_host import distill, ksample, make_model, told


def test_store_hit_needs_same_grid_cfg_and_model(clean, caplog):
    model = make_model(clean)
    distill(clean, model, steps=5, denoise=0.5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dode"):
        ksample(clean, model, "euler_dode", steps=5, denoise=0.5)  # the same partial-denoise grid: a hit
        assert "λ from" in caplog.text
        for kwargs in ({"steps": 6, "denoise": 0.5}, {"steps": 5, "denoise": 0.5, "cfg": 4.0},
                       {"steps": 5, "denoise": 0.5, "scheduler": "simple"}):
            caplog.clear()
            ksample(clean, model, "euler_dode", **kwargs)
            assert "(λ = 0): no λ for" in caplog.text, kwargs
        caplog.clear()
        ksample(clean, make_model(clean, seed=1), "euler_dode", steps=5, denoise=0.5)  # other weights
        assert "(λ = 0): no λ for" in caplog.text


def test_skipped_files_and_the_nearest_entry_are_named(clean):
    model = make_model(clean)
    distill(clean, model)
    (clean.lambda_dir / "broken.safetensors").write_bytes(b"\x00" * 20)
    for _ in range(2):
        assert torch.equal(ksample(clean, model, "euler_dode", cfg=4.0), ksample(clean, model, "euler", cfg=4.0))
    assert len(told(clean, "skipped the λ file broken.safetensors")) == 1  # once per file and reason
    miss = told(clean, "euler_dode: stock euler (λ = 0): no λ for euler, 6 steps, σ 14.61→0, cfg 4")[0]
    assert "nearest entry: euler, 6 steps" in miss and "which differs in cfg 3, not 4" in miss
    assert "skipped unreadable λ files: broken.safetensors (" in miss
