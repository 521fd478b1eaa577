"""CPU time and memory of this process and of other processes (the embedded broker, workers).

The embedded broker is a separate process, so the process's own `time.process_time` misses
its work: other processes are read from `/proc/<pid>/stat` and `/proc/<pid>/status` (Linux;
elsewhere they read as None and the report says "n/a").
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass

__all__ = ["CpuClock", "peak_rss_bytes", "process_cpu_s", "reset_peak_rss", "rss_bytes"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int | None = None) -> float | None:
    """User + system CPU seconds of `pid` (None: this process), children not included."""
    if pid is None or pid == os.getpid():
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def _status_kib(pid: int | None, name: str) -> int | None:
    try:
        with open(f"/proc/{pid or 'self'}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size now."""
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes(pid: int | None = None) -> int | None:
    """Peak resident set size since the process started or since `reset_peak_rss`."""
    kib = _status_kib(pid, "VmHWM")
    if kib is not None:
        return kib * 1024
    if pid is None:  # not Linux: getrusage knows only this process, and cannot be reset
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    return None


def reset_peak_rss(pid: int | None = None) -> bool:
    """Start a new peak (Linux >= 4.0: writing 5 to clear_refs resets VmHWM), so each phase
    of one bench run reports its own peak. False where that is not possible."""
    try:
        with open(f"/proc/{pid or 'self'}/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


@dataclass
class CpuClock:
    """CPU seconds of a set of processes between `start()` and `stop()`. A process that has
    exited by `stop()` counts what was last read of it."""

    pids: dict[str, int | None]
    _start: dict[str, float | None] | None = None
    _last: dict[str, float | None] | None = None

    def _read(self) -> dict[str, float | None]:
        return {name: process_cpu_s(pid) for name, pid in self.pids.items()}

    def start(self) -> None:
        self._start = self._last = self._read()

    def sample(self) -> None:
        """Read now, keeping the last value of processes that have gone."""
        now = self._read()
        last = self._last or {}
        self._last = {name: now[name] if now[name] is not None else last.get(name) for name in now}

    def stop(self) -> dict[str, float | None]:
        self.sample()
        start, last = self._start or {}, self._last or {}
        spent: dict[str, float | None] = {}
        for name in self.pids:
            began, ended = start.get(name), last.get(name)
            spent[name] = None if began is None or ended is None else max(0.0, ended - began)
        return spent
