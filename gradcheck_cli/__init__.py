"""gradcheck: is this gradient right? Autograd against an independent numeric engine."""
from .api import CheckOptions, assert_gradients, assert_module_gradients, check, check_module
from .batch import BatchResult, run_batch
from .compare import CheckResult, GradientResult
from .errors import ExitStatus, InputError
from .module import ModuleResult
from .plugins import custom_op
from .stepping import StepResult, step

__all__ = ["check", "assert_gradients", "check_module", "assert_module_gradients", "ModuleResult", "run_batch", "BatchResult", "CheckOptions", "CheckResult", "GradientResult", "InputError", "ExitStatus", "custom_op", "step", "StepResult"]
