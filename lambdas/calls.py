"""Network calls during a fit: counted, checked, and replayed where a rerun repeats them.

A fit's cost is its network calls, so every call goes through ``CountedModel``, which counts calls and the latent rows
they evaluate (a call on a sub-batch of 8 counts 8) and rejects an output whose shape is not the input's (a
broadcastable wrong shape would otherwise be fitted silently).

The final-sample fit reruns the same solver many times with one parameter changed. A change of the parameter that
acts after network evaluation k leaves evaluations 0..k bit-identical, so their outputs need not be computed again:
``ReplayModel`` answers call j from a recorded trajectory while call j is the recorded one, and calls the network from
the first call that differs onwards. That is the solver restarted from its stored state after evaluation k, with each
solver still written once and run whole (its arithmetic is cheap; only network calls cost). Deterministic models hit
on the whole unchanged head; a nondeterministic one only misses more.

A trajectory keeps each call's output, not its input: call j is the recorded one when its σ, the λ of every earlier
evaluation (λ_i corrects D_i, so it reaches calls after i only) and an exact integer fingerprint of its input (per
latent, the sums of the input's 16-bit words, of their squares and of them weighted by position) are the recorded
ones. The σ's and λ's decide it exactly for a solver whose input to call j depends on the grid only through the σ's
called so far; the fingerprint catches one that looks further ahead. Integer sums are exact, so the fingerprint of a
latent does not depend on the batch it is taken in (a sub-batch rerun replays on any device).
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


FINGERPRINT_CHUNK = 1 << 16  # words summed at a time
FINGERPRINT_PRIME = 65521  # word positions weigh in modulo this prime (|w · p| < 2³¹: int64 sums stay exact)


def fingerprint(x):
    """Per latent, int64 (Σ w, Σ w², Σ w · (position mod 65521)) of the 16-bit words w of x's bits, summed a chunk
    at a time: exact, so equal inputs give equal fingerprints in any batch."""
    words = x.reshape(x.shape[0], -1).contiguous().view(torch.int16)
    total = torch.zeros(x.shape[0], 3, dtype=torch.int64, device=x.device)
    for start in range(0, words.shape[1], FINGERPRINT_CHUNK):
        wide = words[:, start:start + FINGERPRINT_CHUNK].int()
        weights = torch.arange(start, start + wide.shape[1], device=x.device) % FINGERPRINT_PRIME
        total[:, 0] += wide.sum(1, dtype=torch.int64)
        total[:, 2] += (wide * weights.int()).sum(1, dtype=torch.int64)
        total[:, 1] += wide.square_().sum(1, dtype=torch.int64)
    return total


class Trajectory:
    """The network calls of one solver run, in order: (σ, D, input fingerprint) per call (D and the fingerprint None
    unless ``outputs``), the run's λ and the batch rows it ran on (None: all)."""

    def __init__(self, outputs=True):
        self.outputs = outputs
        self.lambdas = []
        self.rows = None
        self.calls = []

    def sigmas(self):
        """The noise level of each call (its first row's σ)."""
        return [float(sigma.flatten()[0]) for sigma, _, _ in self.calls]

    def head(self, n):
        """The first ``n`` calls of this run."""
        head = Trajectory(self.outputs)
        head.lambdas, head.rows, head.calls = self.lambdas, self.rows, self.calls[:n]
        return head


class SigmaLog:
    """``model`` that notes the noise level of each call (its first row's σ) in ``sigmas`` and keeps nothing else."""

    def __init__(self, model):
        self.model = model
        self.sigmas = []

    def __call__(self, x, sigma, **extra_args):
        self.sigmas.append(float(sigma.flatten()[0]))
        return self.model(x, sigma, **extra_args)


class ReplayModel:
    """Answers calls from ``replay`` (a Trajectory of the whole batch, or of the ``rows`` this run is on) while they
    are the recorded calls (same σ, same earlier λ, same input fingerprint) of a run with ``lambdas``, and calls
    ``model`` from the first differing call on. ``record`` (a Trajectory) receives this run's λ, rows and calls."""

    def __init__(self, model, replay=None, rows=None, record=None, lambdas=()):
        self.model = model
        self.replay = Trajectory() if replay is None else replay
        self.select = rows if self.replay.rows is None else None
        self.record = record
        self.lambdas = list(lambdas)
        if record is not None:
            record.lambdas, record.rows = self.lambdas, rows
        self.live = False
        self.index = 0

    def __call__(self, x, sigma, **extra_args):
        out, check = (None, None) if self.live else self.recorded(x, sigma)
        keep = self.record is not None and self.record.outputs
        if out is None:
            self.live = True
            check = fingerprint(x) if keep and check is None else check
            out = self.model(x, sigma, **extra_args)
        self.index += 1
        if self.record is not None:
            self.record.calls.append((sigma, out, check) if keep else (sigma, None, None))
        return out

    def recorded(self, x, sigma):
        """(the recorded output of this call if it is the recorded call, else None; the input's fingerprint, taken
        only once σ, the earlier λ and the shape match, else None)."""
        j = self.index
        if j >= len(self.replay.calls) or self.lambdas[:j] != self.replay.lambdas[:j]:
            return None, None
        old_sigma, old_out, old_check = self.replay.calls[j]
        if old_out is None:
            return None, None
        if self.select is not None:
            old_sigma, old_out, old_check = old_sigma[self.select], old_out[self.select], old_check[self.select]
        if old_out.shape != x.shape or not torch.equal(old_sigma, sigma):
            return None, None
        check = fingerprint(x)
        return (old_out if torch.equal(old_check, check) else None), check
