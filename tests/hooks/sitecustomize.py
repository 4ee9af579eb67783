"""Test-only fault injection, loaded by Python at start-up when this folder is on PYTHONPATH (the
tests put it there for the processes they start, Ray's workers included).

TEST_KILL_AT_STEP=N: SIGKILL the process before global step N of a run.
TEST_KILL_ONCE=FILE: only the first process to create FILE dies (a retried task survives).
TEST_SLEEP_PER_STEP=S: sleep S seconds before each step (keeps a run alive for the hold tests).
"""
import os

if os.environ.get("TEST_KILL_AT_STEP") or os.environ.get("TEST_SLEEP_PER_STEP"):
    import signal
    import time

    def _claim(marker) -> bool:
        if not marker:
            return True
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def _hook(run_dir, epoch, step):
        if float(os.environ.get("TEST_SLEEP_PER_STEP") or 0):
            time.sleep(float(os.environ["TEST_SLEEP_PER_STEP"]))
        if str(step) == os.environ.get("TEST_KILL_AT_STEP") and _claim(os.environ.get("TEST_KILL_ONCE")):
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        from manualbp.train import add_step_hook
    except ImportError:   # a process without the project on its path (e.g. one of Ray's own)
        pass
    else:
        add_step_hook(_hook)
