"""The schedule fit's grids: the screened starts and the change levels they are placed by."""
import torch

from dode.lambdas.grids import FIRST_SHARES, change_levels, first_share_levels, grid_at_levels, start_grids
from dode.samplers import karras_sigmas


def teacher(steps=40):
    return karras_sigmas(steps).double()


def test_change_levels_are_the_normalised_cumulative_change():
    levels = change_levels(teacher(4), [1.0, 3.0, 0.0])
    assert torch.allclose(levels, torch.tensor([0, 0.25, 1.0, 1.0, 1.0], dtype=torch.float64))
    assert change_levels(teacher(4), [0.0, 0.0, 0.0]) is None
    assert change_levels(teacher(4), [1.0, float("nan"), 0.0]) is None


def test_first_share_levels_give_the_first_step_its_share_and_split_the_rest_evenly():
    assert first_share_levels(5, 0.5) == [0.5, 0.625, 0.75, 0.875]
    assert first_share_levels(2, 0.75) == [0.75]


def test_a_grid_at_levels_puts_each_interior_sigma_where_the_change_reaches_its_level():
    """With the change all in the second half of the teacher intervals, level ½ lands at three quarters of the way
    (in σ^(1/7)), since half the change sits in each of the last two quarters."""
    grid = teacher(4)
    cumulative = change_levels(grid, [0.0, 0.0, 1.0, 1.0])
    out = grid_at_levels(grid, cumulative, [0.5])
    assert out[0] == grid[0] and out[-1] == grid[-1] and torch.isclose(out[1], grid[3])


def test_start_grids_screen_the_user_grid_the_equidistributed_grid_and_the_first_shares():
    sigmas, grid = karras_sigmas(5), teacher(50)
    changes = torch.linspace(2, 0.1, 49).tolist()
    starts = start_grids(sigmas, grid, changes)
    assert list(starts) == ["user grid", "equidistributed"] + [f"first step {q:g} of the change" for q in FIRST_SHARES]
    assert torch.equal(starts["user grid"], sigmas.double())
    cumulative = change_levels(grid, changes)
    for name, q in zip(list(starts)[2:], FIRST_SHARES):
        start = starts[name]
        assert start[0] == grid[0] and start[-1] == 0 and (start[1:] < start[:-1]).all()
        reached = cumulative[int((grid - start[1]).abs().argmin())]
        assert abs(float(reached) - q) < 0.03  # the first step takes its share of the change
    assert list(start_grids(sigmas, grid, [0.0] * 49)) == ["user grid"]  # nothing changed: nothing to spread
