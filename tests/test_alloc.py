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
    """In a fresh process: True, and again True (set once); a 28 MB block freed and allocated
    again is then reused from the heap, where glibc's default would have unmapped it (the
    page faults of the second allocation counted)."""
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
    assert int(faults) < 1000     # 5 fresh 28 MB blocks would fault ~7000 pages each


def test_opt_out_leaves_the_allocator_alone():
    out = _run("from rnndrop._alloc import keep_freed_memory; print(keep_freed_memory())",
               RNNDROP_MALLOC="default")
    assert out == "False"
