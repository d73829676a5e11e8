"""Real-time scheduling of the node process (Linux SCHED_FIFO), as PLC runtimes use it.

Under normal scheduling any busy process on the machine can hold the scan's core for tens of
milliseconds (measured here: 14-300 ms stalls of a 10 ms scan while a test suite ran beside
it). A SCHED_FIFO thread preempts every normal process, so only the kernel and other
real-time work can delay the scan. Threads started afterwards (watchdog, MQTT, outbox)
inherit the policy. The kernel's real-time throttling (95 % of each second by default) keeps
a runaway node from locking the machine up.
"""

from __future__ import annotations

import contextlib
import os


def apply_realtime_priority(priority: int) -> str:
    """Give the calling thread SCHED_FIFO at `priority` (1..99); '' on success, else why not."""
    if priority <= 0:
        return ""
    if not hasattr(os, "sched_setscheduler"):
        return "SCHED_FIFO is not available on this platform"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return ("not permitted: run as root or grant CAP_SYS_NICE "
                "(setcap cap_sys_nice+ep on the interpreter, or LimitRTPRIO in systemd)")
    except OSError as exc:
        return str(exc)
    return ""


def current_scheduling() -> tuple[int, int] | None:
    """(policy, priority) of the calling thread, to restore later; None where unsupported."""
    if not hasattr(os, "sched_getscheduler"):
        return None
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority


def restore_scheduling(saved: tuple[int, int] | None) -> None:
    """Put the calling thread back to what current_scheduling() saw (errors ignored: lowering
    one's own priority is always permitted, and a failure leaves the thread as it was)."""
    if saved is None:
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, saved[0], os.sched_param(saved[1]))
