"""systemd's notify protocol: READY, STATUS, WATCHDOG, RELOADING, STOPPING on $NOTIFY_SOCKET.

A no-op when not started by systemd. The watchdog interval is half of WATCHDOG_USEC, and only
when the watchdog is meant for this process (WATCHDOG_PID unset or ours).
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send an sd_notify datagram to $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8", "backslashreplace"))
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC when the watchdog is meant for us, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
