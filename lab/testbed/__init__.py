"""Offline CPU testbed: exact denoisers, the tiny digits EDM model, the lab models, the digits classifier and metrics."""
from .classifier import DigitsClassifier, load_classifier, train_classifier
from .data import load_digits_tensor, split_indices
from .denoisers import EmpiricalDenoiser, GaussianMixtureDenoiser, digits_empirical, make_gmm
from .lab_models import LAB_MODELS, CFGDenoiser, LabModel, load_lab_model
from .metrics import digits_features, fd_digits, fd_pixels, frechet_distance, patch_features, rmse
from .tiny_model import SIGMA_MAX, SIGMA_MIN, TinyEDM, load_tiny_model

__all__ = [
    "DigitsClassifier", "load_classifier", "train_classifier",
    "load_digits_tensor", "split_indices",
    "EmpiricalDenoiser", "GaussianMixtureDenoiser", "digits_empirical", "make_gmm",
    "LAB_MODELS", "CFGDenoiser", "LabModel", "load_lab_model",
    "digits_features", "fd_digits", "fd_pixels", "frechet_distance", "patch_features", "rmse",
    "SIGMA_MAX", "SIGMA_MIN", "TinyEDM", "load_tiny_model",
]
