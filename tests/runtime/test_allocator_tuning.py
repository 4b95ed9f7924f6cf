"""The runtime keeps freed tensor memory for reuse instead of faulting fresh pages in every batch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from isvc_runtime.memory import tune_allocator, user_configured
from runtime_support import REPO_ROOT

# 40 forwards of the MNIST network at batch 32 on a handler-like thread, after a warm-up; prints the
# thread's minor page faults. "tuned" applies the runtime's allocator settings first, as the server does
# at start. The warm-up is long because the tuned heap settles only after ~50 batches (conv2's output
# and the next batch's conv1 output share freed blocks until the layout stops growing); what is
# asserted is the steady state a serving process lives in.
PROBE = textwrap.dedent(
    """
    import resource, sys, threading, torch
    sys.path.insert(0, sys.argv[2])
    if sys.argv[1] == "tuned":
        from isvc_runtime.memory import tune_allocator
        assert tune_allocator({})
    from mnist import Net
    torch.set_num_threads(1)
    net = Net().eval()
    x = torch.randn(32, 1, 28, 28)
    faults = []
    def work():
        with torch.inference_mode():
            for _ in range(100):
                net(x)
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            for _ in range(40):
                net(x).argmax(1).tolist()
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(faults[0])
    """
)


def _batch_page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(REPO_ROOT / "examples" / "mnist")],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},  # no MALLOC_* or LD_PRELOAD from the caller
    )
    return int(out.stdout.strip())


def test_tuned_allocator_reuses_batch_memory_instead_of_faulting_fresh_pages() -> None:
    plain = _batch_page_faults("plain")
    tuned = _batch_page_faults("tuned")
    assert tuned < 40, f"{tuned} page faults in 40 batches: freed activations were not reused"
    assert plain > 100 * max(tuned, 1), (plain, tuned)


def test_allocator_settings_chosen_by_the_user_are_left_alone() -> None:
    assert user_configured({"MALLOC_TRIM_THRESHOLD_": "0"}) == "MALLOC_TRIM_THRESHOLD_"
    assert user_configured({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) == "LD_PRELOAD"
    assert user_configured({"PATH": "/usr/bin", "GLIBC_TUNABLES": ""}) is None
    assert tune_allocator({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) is False
