"""The in-process ceiling: the MNIST model's own forward speed, with no server in the way.

    python bench/serving_ceiling.py --threads 1 --batch 1 --seconds 3

prints one JSON object: images per second for ``--batch`` images per forward on ``--threads``
intra-op threads (eval mode, ``torch.inference_mode``, the example's weights, real held-out digits).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO_ROOT / "examples" / "mnist"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def images_per_second(threads: int, batch: int, seconds: float) -> float:
    import torch

    torch.set_num_threads(threads)
    net = _load(MNIST_DIR / "mnist.py", "bench_mnist_model").Net()
    net.load_state_dict(torch.load(MNIST_DIR / "mnist_cnn.pt", map_location="cpu", weights_only=True))
    net.eval()
    data = _load(MNIST_DIR / "data.py", "bench_mnist_data")
    images, _ = data.heldout_split()
    x = data.to_tensor(images[:batch])
    with torch.inference_mode():
        for _ in range(20):  # warm-up: allocator, oneDNN primitives
            net(x)
        done = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            net(x)
            done += batch
    return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rate = images_per_second(args.threads, args.batch, args.seconds)
    print(json.dumps({"threads": args.threads, "batch": args.batch, "images_per_s": rate}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
