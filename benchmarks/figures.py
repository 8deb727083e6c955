"""A measured figure and the machine it was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None  # None: no target

    def row(self) -> str:
        met = "" if self.met is None else ("yes" if self.met else "NO")
        return f"| {self.name} | {self.value:,.1f} {self.unit} | {self.target} | {met} |"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {system}"


def load() -> str:
    """The machine's load average over the last minute, as a figure's context."""
    return f"{os.getloadavg()[0]:.1f}"
