"""λ fitting, λ files, the λ store and which fit serves a run (torch-only)."""
from .files import load_lambdas, save_lambdas
from .fit import (DEFAULT_FIRST_STEP, DEFAULT_OBJECTIVE, DEFAULT_SCALE, DEFAULT_TEACHER, FINAL_SCALE, OBJECTIVES,
                  DistillResult, FitReport, distill, teacher_grid)
from .identity import autov2
from .match import LambdaNotFound, Request, find_lambdas, find_schedule
from .schema import FORMAT, FORMAT_VERSION, LambdaEntry, LambdaFileError
from .store import LambdaStore

__all__ = ["FORMAT", "FORMAT_VERSION", "LambdaEntry", "LambdaFileError", "LambdaNotFound", "Request", "find_lambdas",
           "find_schedule", "load_lambdas", "save_lambdas", "DEFAULT_FIRST_STEP", "DEFAULT_SCALE", "DEFAULT_TEACHER",
           "DEFAULT_OBJECTIVE", "FINAL_SCALE", "OBJECTIVES", "DistillResult", "FitReport", "distill", "teacher_grid",
           "LambdaStore", "autov2"]
