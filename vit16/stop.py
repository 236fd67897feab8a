"""Stopping a run at an optimizer-step boundary, asked for by a signal.

Ctrl-C (SIGINT, single process) and a Slurm preemption / time-limit notice
(USR2, :class:`vit16.slurm.TrainJob`) do not stop training where they land
(mid-step, the state inconsistent): they set a :class:`StopRequest` that the
training loop reads after each optimizer step (:mod:`vit16.engine`); it then
writes ``last.pt`` and either raises :class:`vit16.runstate.RunInterrupted`
or calls the request's ``then`` (submitit's requeue).

    with listening(request, ctrl_c=True):   # while the epochs run
        ...
    request_stop(then=requeue)               # from a signal handler: False if no run listens
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from typing import Callable, Iterator

__all__ = ["StopRequest", "listening", "request_stop"]


@dataclasses.dataclass
class StopRequest:
    """A pending stop: ``requested`` once asked; ``then`` (if set) is called
    after ``last.pt`` is written, instead of raising ``RunInterrupted``."""

    requested: bool = False
    then: Callable[[], None] | None = None


_LISTENING: list[StopRequest] = []  # the request of the run whose epochs are running


def request_stop(then: Callable[[], None] | None = None) -> bool:
    """Ask the running training loop to stop after its current optimizer step.

    Args:
        then: called once ``last.pt`` holds that step (e.g. requeue and exit).

    Returns:
        ``False`` when no training loop is running (the caller acts at once).
    """
    if not _LISTENING:
        return False
    request = _LISTENING[-1]
    request.requested = True
    request.then = then
    return True


@contextlib.contextmanager
def listening(request: StopRequest, ctrl_c: bool) -> Iterator[StopRequest]:
    """Make ``request`` the target of :func:`request_stop` while the block runs.

    With ``ctrl_c`` (a single process in the main thread), Ctrl-C requests a
    stop; a second Ctrl-C stops at once (``KeyboardInterrupt``). The previous
    SIGINT handler is restored afterwards.
    """
    _LISTENING.append(request)
    previous = None
    if ctrl_c and threading.current_thread() is threading.main_thread():
        def on_ctrl_c(signum, frame) -> None:
            if request.requested:
                raise KeyboardInterrupt
            request.requested = True
            print("\nCtrl-C: stopping after this optimizer step and saving last.pt "
                  "(Ctrl-C again stops at once)", file=sys.stderr, flush=True)

        previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield request
    finally:
        _LISTENING.remove(request)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
