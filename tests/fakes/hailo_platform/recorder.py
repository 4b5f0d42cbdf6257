"""Appends what the double was asked to do to $HAILO_FAKE_LOG, one JSON object a line."""

import json
import os


def record(event, **details):
    path = os.environ.get("HAILO_FAKE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"event": event, **details}) + "\n")
