"""Process memory readings shared by the benchmark scripts (Linux ``/proc``).

The scripts run as ``python benchmarks/<name>.py``, so this sibling module is importable as ``_memory``.
"""

from __future__ import annotations


def proc_status_mib(field: str) -> float:
    """A memory field of ``/proc/self/status`` in MiB.

    ``"VmHWM"`` is this process's own peak resident memory (unlike ``ru_maxrss`` it does not inherit
    the parent's peak across ``exec``); ``"VmRSS"`` is the current resident memory.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(
        f"no {field} in /proc/self/status (these benchmarks measure memory on Linux)"
    )
