"""One targeted fix to dbt itself, applied when this package runs dbt in-process.

dbt-common (1.39) names the module that declared each adapter behaviour flag by calling
`inspect.stack()` every time an adapter is built, i.e. once per dbt invocation. That call reads
the source line of every frame and scans `sys.modules` for each one; inside an Airflow task
(a deep stack, thousands of modules) it took 62% of each cosmos model task's time (py-spy, see
docs/dags.md, "Why the dbt tasks are fast"). The replacement walks the same frames and returns
the same module name from each frame's globals, without touching source files.
"""

from __future__ import annotations

import sys
from types import FrameType


def _declaring_module() -> str:
    """The first module up the stack that is not dbt-common's behaviour-flag module (as dbt-common's own)."""
    from dbt_common import behavior_flags

    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if name and name not in (behavior_flags.__name__, __name__):
            return name
        frame = frame.f_back
    return "Unknown"


def apply() -> None:
    """Install the replacement (idempotent)."""
    from dbt_common.behavior_flags import BehaviorFlagRendered

    BehaviorFlagRendered._default_source = staticmethod(_declaring_module)  # type: ignore[method-assign]  # the patch
