"""Offline CPU testbed: exact denoisers, the tiny digits EDM model, the digits classifier and metrics."""
from .classifier import DigitsClassifier, load_classifier, train_classifier
from .data import load_digits_tensor, split_indices
from .denoisers import EmpiricalDenoiser, GaussianMixtureDenoiser, digits_empirical, make_gmm
from .metrics import fd_digits, fd_pixels, frechet_distance, rmse
from .tiny_model import SIGMA_MAX, SIGMA_MIN, TinyEDM, load_tiny_model

__all__ = [
    "DigitsClassifier", "load_classifier", "train_classifier",
    "load_digits_tensor", "split_indices",
    "EmpiricalDenoiser", "GaussianMixtureDenoiser", "digits_empirical", "make_gmm",
    "fd_digits", "fd_pixels", "frechet_distance", "rmse",
    "SIGMA_MAX", "SIGMA_MIN", "TinyEDM", "load_tiny_model",
]
