"""Reading A1111's `parameters` text ("prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: Euler a, ...") into the
dict `/png-info` answers with as `parameters`."""

from __future__ import annotations

import re

# "Key: value" pairs of the last line; a value may be quoted (A1111 quotes values holding commas).
_PAIR = re.compile(r'\s*([\w ()+-]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse(text: str) -> dict[str, str]:
    lines = text.strip().split("\n")
    settings = lines.pop() if "Steps: " in lines[-1] else ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    parsed = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PAIR.findall(settings):
        parsed[key.strip()] = value.strip()
    return parsed
