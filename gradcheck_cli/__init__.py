"""gradcheck: is this gradient right? Autograd against an independent numeric engine."""
from .api import CheckOptions, assert_gradients, check
from .batch import BatchResult, run_batch
from .compare import CheckResult, GradientResult
from .errors import ExitStatus, InputError
from .plugins import custom_op
from .stepping import StepResult, step

__all__ = ["check", "assert_gradients", "run_batch", "BatchResult", "CheckOptions", "CheckResult", "GradientResult", "InputError", "ExitStatus", "custom_op", "step", "StepResult"]
