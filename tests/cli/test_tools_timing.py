"""``crossentropy._tools.timing``: the timing loop with a given clock and preparation, and :func:`run_process`.

No assertion on how long anything took: a fake clock stands in for time, and :func:`run_process` is
checked on what a child did (its exit code, its output, the memory it touched).
"""

from __future__ import annotations

import gc
import sys

import pytest

from crossentropy._tools.timing import HOST_CLOCK, Clock, run_process, time_calls


def test_time_calls_with_a_clock_prepares_each_call_and_settles_before_reading():
    log: list[str] = []
    ticks = iter(range(0, 1000, 1))
    gc_during_calls: list[bool] = []

    def mark() -> int:
        log.append("mark")
        return next(ticks) ** 2  # stop - start differs from call to call

    def settle() -> None:
        log.append("settle")

    def call() -> str:
        log.append("call")
        gc_during_calls.append(gc.isenabled())
        return "result"

    clock = Clock(mark, lambda start, stop: float(stop - start), settle)
    results: list[str] = []
    seconds = time_calls(
        call, repeat=3, warmup=2, prepare=lambda: log.append("prepare"), clock=clock, on_result=results.append
    )
    warmups = ["prepare", "call"] * 2
    timed = ["prepare", "mark", "call", "mark"] * 3
    assert log == [*warmups, "settle", *timed, "settle"]
    # Marks 0, 1, 4, 9, 16, 25: each call's stop minus its start.
    assert seconds == [1.0, 5.0, 9.0]
    assert results == ["result"] * 3
    assert gc_during_calls == [gc.isenabled()] * 2 + [False] * 3


def test_time_calls_on_the_host_clock_by_default():
    assert HOST_CLOCK.settle() is None
    seconds = time_calls(lambda: None, repeat=4, warmup=0)
    assert len(seconds) == 4
    assert all(s >= 0 for s in seconds)


@pytest.mark.skipif(sys.platform not in ("linux", "darwin"), reason="wait4 and ru_maxrss: POSIX")
def test_run_process_reports_exit_code_output_and_the_peak_of_a_descendant():
    megabytes = 120
    grandchild = f"b = bytearray({megabytes} << 20); b[::4096] = b'x' * len(b[::4096])"
    child = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)\n"
        "print('first'); print('{\"last\": 1}'); print('to stderr', file=sys.stderr); sys.exit(3)\n"
    )
    run = run_process([sys.executable, "-c", child])
    assert run.returncode == 3
    assert run.last_line() == '{"last": 1}'
    assert run.stderr.strip() == "to stderr"
    assert run.peak_rss_bytes >= megabytes << 20  # the grandchild's pages, waited for by the child
    assert run.wall_s > 0
    assert run.user_s >= 0
    assert run.sys_s >= 0


def test_run_process_passes_the_environment_and_survives_a_large_output():
    script = "import os, sys; sys.stdout.write('x' * (1 << 20) + '\\n' + os.environ['TOOLS_TEST'])"
    run = run_process([sys.executable, "-c", script], env={"TOOLS_TEST": "seen", "PATH": ""})
    assert run.returncode == 0
    assert run.last_line() == "seen"
    assert len(run.stdout) == (1 << 20) + 1 + len("seen")
