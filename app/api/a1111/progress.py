"""A1111's /progress from this replica's jobs (views the event loop owns): `progress: 0` and `job_count: 0` when
idle, which is what SillyTavern and webuiapi wait for after a model switch."""

from __future__ import annotations

import time
from typing import Any


def progress(active: list[dict[str, Any]]) -> dict[str, Any]:
    running = next((view for view in active if view["status"] == "running"), None)
    step, total, fraction, eta = 0, 0, 0.0, 0.0
    if running is not None:
        step, total = running["progress"]["step"], running["progress"]["total"]
        fraction = step / total if total else 0.0
        elapsed = time.time() - (running["started"] or time.time())
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    return {
        "progress": fraction,
        "eta_relative": eta,
        "state": {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": f"job({running['id']})" if running is not None else "",
            "job_count": len(active),
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": step,
            "sampling_steps": total,
        },
        "current_image": None,
        "textinfo": None,
    }
