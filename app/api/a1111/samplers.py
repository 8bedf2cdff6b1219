"""A1111's sampler and schedule names onto ours (app/engine/models/samplers.py).

Since A1111 1.9 a sampler ("DPM++ 2M") and a schedule ("Karras") are two fields; older clients send them as one
name ("DPM++ 2M Karras"). Both spellings become one of our scheduler names; a combination we do not have is
refused naming what there is.
"""

from __future__ import annotations

from app.errors import InvalidRequest

# A1111 label -> our scheduler name; "Karras" is the one schedule we have, and only for DPM++ 2M.
SAMPLERS = {
    "Euler a": "euler_a",
    "Euler": "euler",
    "Heun": "heun",
    "DPM++ 2M": "dpmpp_2m",
    "DDIM": "ddim",
    "UniPC": "unipc",
    "LCM": "lcm",
}
KARRAS = {"dpmpp_2m": "dpmpp_2m_karras"}
SCHEDULES = {"automatic": "Automatic", "karras": "Karras"}  # name -> label
ALIASES = {"k_euler_a": "Euler a", "k_euler": "Euler", "k_heun": "Heun", "k_dpmpp_2m": "DPM++ 2M"}


def _sampler(name: str) -> str:
    key = name.strip().lower()
    for label, ours in SAMPLERS.items():
        if key in (label.lower(), ours):
            return ours
    if (alias := ALIASES.get(key)) is not None:
        return SAMPLERS[alias]
    raise InvalidRequest(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}", field="sampler_name")


def _schedule(name: str | None) -> str:
    key = (name or "automatic").strip().lower()
    for schedule, label in SCHEDULES.items():
        if key in (schedule, label.lower()):
            return schedule
    raise InvalidRequest(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULES)}", field="scheduler")


def resolve(sampler: str | None, schedule: str | None) -> str | None:
    """Our scheduler name for an A1111 sampler and schedule; None (no sampler named): the model's own."""
    if sampler is None or not sampler.strip():
        if _schedule(schedule) == "karras":
            raise InvalidRequest("the Karras schedule needs sampler_name 'DPM++ 2M'", field="scheduler")
        return None
    words = sampler.strip()
    if words.lower().endswith(" karras"):  # the combined spelling
        words, schedule = words[: -len(" karras")], "karras"
    ours = _sampler(words)
    if _schedule(schedule) == "automatic":
        return ours
    if ours not in KARRAS:
        raise InvalidRequest(
            f"the Karras schedule is available with 'DPM++ 2M' only, not {sampler!r}", field="scheduler"
        )
    return KARRAS[ours]


def label(ours: str | None) -> str:
    """The A1111 label of one of our scheduler names (what `info.sampler_name` says)."""
    for a1111, name in SAMPLERS.items():
        if name == ours:
            return a1111
    if ours in KARRAS.values():
        return "DPM++ 2M Karras"
    return ours or "Automatic"
