"""VDevice double: opens unless HAILO_FAKE_NO_DEVICE is set; refuses use after release.

VDevice.create_params() has the fields and types of the real `_pyhailort.VDeviceParams`
(hailo-ai/hailort v5.2.0, hailort/libhailort/bindings/python/src/pyhailort.cpp,
`py::class_<VDeviceParamsWrapper>`): device_ids a list, scheduling_algorithm an enum
value (ROUND_ROBIN by default), group_id a string ("UNIQUE" by default; the wrapper's
default() leaves it empty, which HailoRT reads as UNIQUE), multi_process_service a bool.
"""

import os

from hailo_platform.pyhailort._pyhailort import HailoRTException, SchedulingAlgorithm
from hailo_platform.recorder import record


class VDeviceParams:
    def __init__(self):
        self.device_ids = []
        self.device_count = 1
        self.group_id = "UNIQUE"
        self.scheduling_algorithm = SchedulingAlgorithm.ROUND_ROBIN
        self.multi_process_service = False


class VDevice:
    def __init__(self, params=None, *, device_ids=None):
        self._vdevice = None  # as the real __init__ does first, so release() after a failure is safe
        if os.environ.get("HAILO_FAKE_NO_DEVICE"):
            raise HailoRTException("libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)")
        self.params = params or VDeviceParams()
        if not isinstance(self.params.scheduling_algorithm, SchedulingAlgorithm):
            raise TypeError("scheduling_algorithm: incompatible function arguments")  # pybind11's refusal
        self._vdevice = object()  # None once released, as in the real binding
        record("vdevice_open", group_id=self.params.group_id)

    @staticmethod
    def create_params():
        return VDeviceParams()

    @property
    def released(self):
        return self._vdevice is None

    def release(self):
        if self._vdevice is not None:
            self._vdevice = None
            record("vdevice_release")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
