"""maskrcnn.cpu: denormal floats flushed to zero in every intra-op thread, when set before the first parallel op.

Each case runs in a fresh interpreter, since the setting belongs to the threads of a process.
"""
import os
import subprocess
import sys

import pytest

# Made through its bits (int32 1 = float32's smallest denormal): a float fill would itself be flushed.
PROBE = """
import torch
torch.set_num_threads(2)
from maskrcnn.cpu import flush_denormals, all_threads_flush_denormals
{before}
print(flush_denormals(), all_threads_flush_denormals())
denormal = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)
print(int((denormal * 1.0).view(torch.int32).count_nonzero()))
"""


def run(before: str = "") -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_flush_at_start_reaches_every_thread():
    flushed, checked, nonzero = run()
    assert (flushed, checked) == ("True", "True")
    assert nonzero == "0"  # 2**20 denormals times 1.0, split among the threads: all flushed


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two intra-op threads to tell apart")
def test_flush_after_the_thread_pool_started_is_reported_incomplete():
    # A parallel op first: the worker threads start without the setting and keep it that way.
    flushed, checked, nonzero = run(before="(torch.randn(1 << 20) * 2).sum()")
    assert (flushed, checked) == ("False", "False")
    assert int(nonzero) > 0  # the worker thread's share stayed denormal


def test_the_command_flushes_before_any_torch_work(monkeypatch, capsys):
    from maskrcnn import cli, cpu

    calls = []
    monkeypatch.setattr(cpu, "flush_denormals", lambda: calls.append("flushed") or True)
    monkeypatch.setattr(cli, "cmd_validate", lambda args: calls.append("command") or 0)
    assert cli.main(["validate", "--data", "shapes:4"]) == 0
    assert calls == ["flushed", "command"]


def test_freed_memory_is_kept_for_reuse_in_a_process_of_its_own():
    """cpu.reuse_freed_memory: after it, a freed 64 MB block stays resident (glibc keeps it on the heap), where
    by default it is unmapped at once."""
    import subprocess
    import sys

    program = (
        "import sys, torch\n"
        "from maskrcnn.cpu import reuse_freed_memory\n"
        "if sys.argv[1] == 'keep': assert reuse_freed_memory()\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20\n"
        "before = rss(); block = torch.ones(16 << 20); del block\n"
        "print(rss() - before)\n"
    )
    grown = {case: int(subprocess.run([sys.executable, "-c", program, case], capture_output=True, text=True,
                                      check=True).stdout.split()[-1]) for case in ("default", "keep")}
    assert grown["default"] < 16 and grown["keep"] >= 60, grown
