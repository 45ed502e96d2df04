"""gradcheck: is this gradient right? Autograd against an independent numeric engine."""
from .api import CheckOptions, check
from .compare import CheckResult, GradientResult
from .errors import ExitStatus, InputError

__all__ = ["check", "CheckOptions", "CheckResult", "GradientResult", "InputError", "ExitStatus"]
