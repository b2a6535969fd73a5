"""A task for the parsing pool that kills its own process on one input (imported by spawned workers)."""
from __future__ import annotations

import os
import signal


def echo_or_die(item: str) -> str:
    """Return `item`, except "die": SIGKILL this process, as the OS's out-of-memory killer would."""
    if item == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return item.upper()
