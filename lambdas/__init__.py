"""λ fitting, λ files and the λ store (torch-only)."""
from .files import (FORMAT, FORMAT_VERSION, LambdaEntry, LambdaFileError, LambdaNotFound, find_lambdas,
                    find_schedule, load_lambdas, save_lambdas)
from .fit import (DEFAULT_FIRST_STEP, DEFAULT_OBJECTIVE, DEFAULT_SCALE, DEFAULT_TEACHER, FINAL_SCALE, OBJECTIVES,
                  DistillResult, FitReport, distill, teacher_grid)
from .store import LambdaStore, autov2

__all__ = ["FORMAT", "FORMAT_VERSION", "LambdaEntry", "LambdaFileError", "LambdaNotFound", "find_lambdas",
           "find_schedule", "load_lambdas", "save_lambdas", "DEFAULT_FIRST_STEP", "DEFAULT_SCALE", "DEFAULT_TEACHER",
           "DEFAULT_OBJECTIVE", "FINAL_SCALE", "OBJECTIVES", "DistillResult", "FitReport", "distill", "teacher_grid", "LambdaStore", "autov2"]
