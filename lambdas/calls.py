"""Network calls during a fit: counted, checked, and replayed where a rerun repeats them.

A fit's cost is its network calls, so every call goes through ``CountedModel``, which counts calls and the latent rows
they evaluate (a call on a sub-batch of 8 counts 8) and rejects an output whose shape is not the input's (a
broadcastable wrong shape would otherwise be fitted silently).

The final-sample fit reruns the same solver many times with one parameter changed. A change of the parameter that
acts after network evaluation k leaves evaluations 0..k bit-identical, so their outputs need not be computed again:
``ReplayModel`` answers call j from a recorded trajectory while call j's inputs (x and σ) are bit-identical to the
recorded ones, and calls the network from the first call that differs onwards. That is the solver restarted from its
stored state after evaluation k, with each solver still written once and run whole (its arithmetic is cheap; only
network calls cost). Deterministic models hit on the whole unchanged head; a nondeterministic one only misses more.
"""
import torch


class CountedModel:
    """``model`` with a count of network calls and evaluated rows, and a check that D has x's shape."""

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.rows = 0

    def __call__(self, x, sigma, **extra_args):
        out = self.model(x, sigma, **extra_args)
        self.calls += 1
        self.rows += int(x.shape[0])
        if not torch.is_tensor(out) or out.shape != x.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"the model returned {shape} for an input of shape {tuple(x.shape)}; a denoiser must "
                             "return D(x, σ) with x's shape (check the model wrapper's output)")
        return out


class Trajectory:
    """The network calls of one solver run, in order: (x, σ, D) per call."""

    def __init__(self):
        self.calls = []

    def sigmas(self):
        """The noise level of each call (its first row's σ)."""
        return [float(sigma.flatten()[0]) for _, sigma, _ in self.calls]

    def slim(self):
        """The same calls with only their σ: what a finished run's report needs, without its latents."""
        slim = Trajectory()
        slim.calls = [(None, sigma, None) for _, sigma, _ in self.calls]
        return slim


class SigmaLog:
    """``model`` that notes the noise level of each call (its first row's σ) in ``sigmas`` and keeps nothing else."""

    def __init__(self, model):
        self.model = model
        self.sigmas = []

    def __call__(self, x, sigma, **extra_args):
        self.sigmas.append(float(sigma.flatten()[0]))
        return self.model(x, sigma, **extra_args)


class ReplayModel:
    """Answers calls from ``replay`` (a Trajectory, optionally restricted to ``rows`` of its batch) while the inputs
    are bit-identical to the recorded ones, and calls ``model`` from the first differing call on. ``record`` (a
    Trajectory) receives every call of this run."""

    def __init__(self, model, replay=None, rows=None, record=None):
        self.model = model
        self.replay = [] if replay is None else replay.calls
        self.rows = rows
        self.record = record
        self.live = False
        self.index = 0

    def __call__(self, x, sigma, **extra_args):
        out = None if self.live else self.recorded(x, sigma)
        if out is None:
            self.live = True
            out = self.model(x, sigma, **extra_args)
        self.index += 1
        if self.record is not None:
            self.record.calls.append((x, sigma, out))
        return out

    def recorded(self, x, sigma):
        """The recorded output of this call if its inputs are bit-identical to the recording's, else None."""
        if self.index >= len(self.replay):
            return None
        old_x, old_sigma, old_out = self.replay[self.index]
        if self.rows is not None:
            old_x, old_sigma, old_out = old_x[self.rows], old_sigma[self.rows], old_out[self.rows]
        if old_x.shape == x.shape and torch.equal(old_sigma, sigma) and torch.equal(old_x, x):
            return old_out
        return None
