"""Holding the engine host: a lane-1 job that keeps its one worker until released."""

import threading


def hold(host) -> threading.Event:
    """Keep `host` busy with a lane-1 job until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def blocker(cancelled):
        started.set()
        release.wait(30)

    host.submit("held.py", blocker)
    assert started.wait(10)
    return release
