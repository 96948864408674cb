"""`redraft serve` restarts a worker that dies (issue 12), with a back-off while it keeps dying
(``redraft.embedded.Supervisor``, real processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from redraft.embedded import Supervisor
from tests.utils.waiting import until


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", code])


def test_a_killed_process_is_started_again():
    sup = Supervisor(lambda: _python("import time; time.sleep(120)"), count=2, delay_s=0.1, max_delay_s=5,
                     poll_s=0.05).run()
    try:
        first = sup.procs
        first[0].send_signal(signal.SIGKILL)
        until(lambda: sup.procs[0].pid != first[0].pid and sup.procs[0].poll() is None, "never restarted")
        assert sup.procs[1] is first[1]  # the other one was left alone
        assert sup.restarts == [(0, -signal.SIGKILL, 0.1)]
    finally:
        sup.stop(timeout_s=5)
    assert all(p.poll() is not None for p in sup.procs)  # stop() ends them all


def test_a_process_that_keeps_dying_is_restarted_ever_more_slowly():
    sup = Supervisor(lambda: _python("raise SystemExit(3)"), delay_s=0.25, max_delay_s=1.0, poll_s=0.02).run()
    try:
        until(lambda: len(sup.restarts) >= 4, "not restarted four times")
    finally:
        sup.stop(timeout_s=5)
    assert sup.restarts[:4] == [(0, 3, 0.25), (0, 3, 0.5), (0, 3, 1.0), (0, 3, 1.0)]  # doubled, up to the maximum


def test_a_process_that_ran_long_enough_restarts_after_the_first_delay_again():
    sup = Supervisor(lambda: _python("import time; time.sleep(0.3); raise SystemExit(1)"), delay_s=0.05, max_delay_s=0.2, poll_s=0.02).run()
    try:
        until(lambda: len(sup.restarts) >= 3, "not restarted three times")
    finally:
        sup.stop(timeout_s=5)
    assert [delay for _, _, delay in sup.restarts[:3]] == [0.05, 0.05, 0.05]


def test_a_process_that_was_asked_to_stop_is_left_stopped():
    sup = Supervisor(lambda: _python("pass"), delay_s=0.05, poll_s=0.02).run()
    try:
        until(lambda: sup.procs[0].poll() == 0, "never exited")
        time.sleep(0.2)  # several polls
        assert sup.restarts == [] and sup.procs[0].poll() == 0
    finally:
        sup.stop(timeout_s=5)
