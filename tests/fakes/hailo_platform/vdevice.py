"""VDevice double: opens unless HAILO_FAKE_NO_DEVICE is set; refuses use after release.

With HAILO_FAKE_EXCLUSIVE naming a file, one process at a time has the device (a flock on that
file, which goes with the process, as a dead holder's file descriptors do): a VDevice in
another process meanwhile fails as the real one does, where the driver answers
HAILO_DEVICE_IN_USE and VDeviceBase::create_devices, finding no free device, gives
HAILO_OUT_OF_PHYSICAL_DEVICES (hailort/libhailort/src/vdevice/vdevice.cpp). VDevices of one
process share it (the SHARED group).

VDevice.create_params() has the fields and types of the real `_pyhailort.VDeviceParams`
(hailo-ai/hailort v5.2.0, hailort/libhailort/bindings/python/src/pyhailort.cpp,
`py::class_<VDeviceParamsWrapper>`): device_ids a list, scheduling_algorithm an enum
value (ROUND_ROBIN by default), group_id a string ("UNIQUE" by default; the wrapper's
default() leaves it empty, which HailoRT reads as UNIQUE), multi_process_service a bool.
"""

import fcntl
import os

from hailo_platform.pyhailort._pyhailort import HailoRTException, SchedulingAlgorithm
from hailo_platform.recorder import record

_held = {"fd": None, "open": 0}  # this process's hold on the exclusive device, and its VDevices


def _take_exclusive():
    path = os.environ.get("HAILO_FAKE_EXCLUSIVE")
    if not path or _held["open"]:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HailoRTException("libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)") from None
    _held["fd"] = fd


def _let_go_of_exclusive():
    if _held["open"] == 0 and _held["fd"] is not None:
        os.close(_held["fd"])
        _held["fd"] = None


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
        _take_exclusive()
        _held["open"] += 1
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
            _held["open"] -= 1
            _let_go_of_exclusive()
            record("vdevice_release")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
