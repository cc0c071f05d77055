"""One writer per output: the lock refuses a second live writer and recovers from a killed one."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gandl_core.locks import OutputBusyError, lock_path, output_lock

HOLD = """
import sys, time
from gandl_core.locks import output_lock
with output_lock(sys.argv[1], command="embed"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(target):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_second_writer_refused_naming_holder_then_recovers_after_kill(tmp_path, kind):
    target = tmp_path / "run"
    if kind == "folder":
        target.mkdir()
    else:
        target = tmp_path / "emb.parquet"
    proc = _holder(target)
    try:
        with pytest.raises(OutputBusyError) as err:
            with output_lock(target, command="embed"):
                pass
        msg = str(err.value)
        assert f"pid {proc.pid}" in msg and "'embed'" in msg and str(target) in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The killed holder leaves its lock file behind; the OS released the lock, so this succeeds.
    assert lock_path(target).exists()
    with output_lock(target):
        assert lock_path(target).exists()
    assert not lock_path(target).exists()  # a clean release leaves nothing behind


def test_lock_is_exclusive_within_one_process_and_released_on_error(tmp_path):
    target = tmp_path / "out.parquet"
    with output_lock(target):
        with pytest.raises(OutputBusyError):
            with output_lock(target):
                pass
    with pytest.raises(RuntimeError):
        with output_lock(target):
            raise RuntimeError("boom")
    with output_lock(target):  # released by the failing block
        pass
    assert os.listdir(tmp_path) == []
