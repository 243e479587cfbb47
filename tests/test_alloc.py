"""rnndrop._alloc: glibc's thresholds set once for a training process, or left alone."""
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _run(code: str, **env) -> str:
    import os
    e = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=e, check=True).stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_keep_freed_memory_sets_the_thresholds_once():
    """In a fresh process: True, and again True (set once). Then a 28 MB block freed and
    allocated again five times is reused from the heap: its ~6,800 pages fault in at most about
    once more. With glibc's defaults (RNNDROP_MALLOC=default) the same code faulted 13,600 to
    34,200 pages here: the block handed back to the system and faulted in again, 2 to 5 times."""
    code = (
        "import resource, torch\n"
        "from rnndrop._alloc import keep_freed_memory\n"
        "print(keep_freed_memory(), keep_freed_memory())\n"
        "torch.empty(7_000_000).fill_(1)\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    torch.empty(7_000_000).fill_(1)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)\n")
    first, faults = _run(code).splitlines()
    assert first == "True True"
    pages = 7_000_000 * 4 // 4096
    assert int(faults) <= 1.2 * pages


def test_opt_out_leaves_the_allocator_alone():
    out = _run("from rnndrop._alloc import keep_freed_memory; print(keep_freed_memory())",
               RNNDROP_MALLOC="default")
    assert out == "False"
