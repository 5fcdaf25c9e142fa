"""nodes/feedback.py: each run tells the browser what it did."""
from comfy_host import cond, ksample, latent, make_model, told


def test_runs_tell_the_browser_what_they_did(clean):
    model = make_model(clean)
    clean.ui.client_id = "tab-1"
    ksample(clean, model, "euler_dode")
    ((event, data, sid),) = clean.ui.messages
    assert (event, sid, data["level"]) == ("dode.status", "tab-1", "warning")  # a miss of *_dode is a warning
    assert data["text"].startswith("euler_dode: stock euler (λ = 0): no λ for euler, 6 steps, σ 14.61→0, cfg 3")
    out = clean.v3.DistillLambdas.execute(model, cond(0.5), cond(-0.5), latent(2), 1, 3.0, "euler", "karras", 6, 1.0,
                                          "heun", 3, True, objective="greedy")
    assert out.ui == {"text": [out.args[3]]} and out.args[3].startswith("D-ODE euler: euler, 6 steps")
    assert told(clean, "Distill λ: euler, 6 steps") and told(clean, "saved to model-")
    ksample(clean, model, "euler_dode")
    assert told(clean, "euler_dode: λ from model-")
