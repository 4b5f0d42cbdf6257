"""VDevice double: opens unless HAILO_FAKE_NO_DEVICE is set; refuses use after release."""

import os

from hailo_platform.pyhailort._pyhailort import HailoRTException
from hailo_platform.recorder import record


class VDeviceParams:
    def __init__(self):
        self.device_ids = None
        self.device_count = 1
        self.group_id = "UNIQUE"
        self.scheduling_algorithm = "ROUND_ROBIN"


class VDevice:
    def __init__(self, params=None, *, device_ids=None):
        if os.environ.get("HAILO_FAKE_NO_DEVICE"):
            raise HailoRTException("libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)")
        self.params = params or VDeviceParams()
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
