"""Status-code exceptions as ExceptionWrapper raises them (pyhailort.py in HailoRT v5.2.0)."""

from hailo_platform.pyhailort._pyhailort import HailoRTException, HailoRTStatusException  # noqa: F401
from hailo_platform.pyhailort._pyhailort import SchedulingAlgorithm as HailoSchedulingAlgorithm  # noqa: F401


class HailoRTInvalidOperationException(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class HailoRTTimeout(HailoRTException):
    pass
