"""The double's stand-in for HailoRT's compiled module: exceptions and enums.

Mirrors hailo-ai/hailort v5.2.0, hailort/libhailort/bindings/python/src/pyhailort.cpp
(`LLMGeneratorCompletionStatus`; `SchedulingAlgorithm`, the type of
VDeviceParams.scheduling_algorithm).
"""

import enum


class HailoRTException(Exception):
    pass


class HailoRTStatusException(HailoRTException):
    """Raised by unwrapped calls; its message is the numeric status code."""


class LLMGeneratorCompletionStatus(enum.Enum):
    GENERATING = 0
    MAX_TOKENS_REACHED = 1
    LOGICAL_END_OF_GENERATION = 2
    ABORTED = 3


class SchedulingAlgorithm(enum.Enum):
    NONE = 0
    ROUND_ROBIN = 1
