"""lab/benchmarks/memory.py: the live-memory measurement and one row of the video-latent table."""
import torch

from dode.lab.benchmarks import memory


def test_live_peak_is_the_most_memory_live_at_once():
    n = 1 << 16

    def work():
        a = torch.ones(n)        # 4n bytes
        b = a * 2                # 8n live
        del a
        c = torch.empty(2 * n)   # 4n + 8n = 12n live: the peak
        del b, c
        return torch.zeros(n)    # 4n kept

    result, peak = memory.live_peak(work)
    assert peak == 12 * n and result.shape == (n,)


def test_the_flow_gaussian_is_the_exact_denoiser_of_unit_gaussian_data():
    """E[x0 | x] for x = (1 − σ) x0 + σ ε, x0, ε ~ N(0, 1): (1 − σ) x / ((1 − σ)² + σ²)."""
    x = torch.randn(3, 4)
    assert torch.allclose(memory.FlowGaussian()(x, torch.tensor([0.25])), x * 0.75 / (0.75 ** 2 + 0.25 ** 2))
    assert torch.allclose(memory.shifted_grid(2, 3.0), torch.tensor([1.0, 0.75, 0.0]))


def test_a_row_measures_a_fit_on_video_latents():
    torch.set_num_threads(1)
    row = memory.measure(1, 3, latent=(16, 3, 8, 8))
    assert row["steps"] == 3 and row["network_calls"] > 0 and 1 < row["peak_latents"] < 1000
