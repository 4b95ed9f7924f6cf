"""The in-process ceiling: the model's own speed, with no server in the way.

    python bench/serving_ceiling.py --threads 1 --batch 1 --seconds 3
    python bench/serving_ceiling.py --workload resnet18 --weights W.pt --jpeg IMAGE.jpg --threads 2 --batch 8
    python bench/serving_ceiling.py --workload resnet18 --weights W.pt --jpeg IMAGE.jpg --streams 2

prints one JSON object: images per second for ``--batch`` images per forward on ``--threads``
intra-op threads (eval mode, ``torch.inference_mode``), on each of ``--streams`` Python threads running
such steps at once (default 1; torch's kernels release the GIL, and each thread's intra-op count is its
own: OpenMP's thread count is a per-thread setting). MNIST: the forward alone, the example's weights,
real held-out digits. ResNet-18 (bench/resnet_workload.py): what a server must do per image besides the
protocol, i.e. decode the JPEG, resize, crop and normalise as TorchServe's ``image_classifier`` does,
then the forward and the softmax.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


def run_streams(step: Callable[[], None], threads: int, streams: int, warmup: int, seconds: float) -> int:
    """Steps done in ``seconds`` by ``streams`` threads each running ``step`` on ``threads`` intra-op
    threads (after ``warmup`` steps each, not counted)."""
    import torch

    done = [0] * streams
    ready = threading.Barrier(streams + 1)
    counting = threading.Event()
    stop = threading.Event()

    def stream(index: int) -> None:
        torch.get_num_threads()  # the thread's first torch use sets the count last set by any thread ...
        torch.set_num_threads(threads)  # ... then its own (OpenMP's count is per thread)
        with torch.inference_mode():
            for _ in range(warmup):
                step()
            ready.wait()
            while not stop.is_set():
                step()
                if counting.is_set():
                    done[index] += 1

    workers = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(streams)]
    for worker in workers:
        worker.start()
    ready.wait()
    counting.set()
    time.sleep(seconds)
    stop.set()
    total = sum(done)  # steps finished within the window (one step per stream may run past it, uncounted)
    for worker in workers:
        worker.join()
    return total


def images_per_second(threads: int, batch: int, seconds: float, streams: int = 1) -> float:
    import torch

    torch.set_num_threads(threads)
    net = _load(MNIST_DIR / "mnist.py", "bench_mnist_model").Net()
    net.load_state_dict(torch.load(MNIST_DIR / "mnist_cnn.pt", map_location="cpu", weights_only=True))
    net.eval()
    data = _load(MNIST_DIR / "data.py", "bench_mnist_data")
    images, _ = data.heldout_split()
    x = data.to_tensor(images[:batch])

    def step() -> None:
        net(x)

    # warm-up: allocator, oneDNN primitives
    return run_streams(step, threads, streams, 20, seconds) * batch / seconds


def resnet_images_per_second(
    threads: int, batch: int, seconds: float, weights: Path, jpeg: Path, streams: int = 1
) -> float:
    import io

    import torch
    from PIL import Image
    from torchvision import models, transforms

    torch.set_num_threads(threads)
    net = models.resnet18()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    processing = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    encoded = jpeg.read_bytes()

    def step() -> None:
        images = [processing(Image.open(io.BytesIO(encoded)).convert("RGB")) for _ in range(batch)]
        torch.softmax(net(torch.stack(images)), dim=1)

    return run_streams(step, threads, streams, 3, seconds) * batch / seconds


def in_subprocess(threads: int, batch: int, seconds: float, *workload: str, streams: int = 1) -> float:
    """Images per second as this script measures them, in a fresh process (the caller's threads and
    imports do not count); ``workload``: more of its options (``--workload resnet18 --weights ...``)."""
    command = [sys.executable, __file__, "--threads", str(threads), "--batch", str(batch)]
    command += ["--streams", str(streams), "--seconds", str(seconds), *workload]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout)["images_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--streams", type=int, default=1, help="threads running forwards at once")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workload", choices=["mnist", "resnet18"], default="mnist")
    parser.add_argument("--weights", type=Path, help="resnet18: the state dict")
    parser.add_argument("--jpeg", type=Path, help="resnet18: the image decoded for every row")
    args = parser.parse_args()
    if args.workload == "resnet18":
        rate = resnet_images_per_second(
            args.threads, args.batch, args.seconds, args.weights, args.jpeg, args.streams
        )
    else:
        rate = images_per_second(args.threads, args.batch, args.seconds, args.streams)
    out = {"threads": args.threads, "batch": args.batch, "streams": args.streams, "images_per_s": rate}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
