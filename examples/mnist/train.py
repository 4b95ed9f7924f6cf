"""Train the example's MNIST network on the first 8,000 test images; report accuracy on the last 2,000.

    .venv/bin/python examples/mnist/train.py [--epochs N] [--seed S] [--out PATH]

CPU only, deterministic for a given seed and thread count. Small random affine distortions (rotation,
shift, scale) stand in for the 52,000 training images this split does without. The held-out images are
never looked at until the single evaluation at the end.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import TRAIN_SIZE, heldout_split, to_tensor, train_split
from mnist import Net

DEFAULT_OUT = Path(__file__).resolve().parent / "mnist_cnn.pt"


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    degrees: float = 12.0,
    shift: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Distort a normalised batch ``[N, 1, 28, 28]``; the background keeps its normalised value."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack(
        [torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background


def evaluate(model: Net, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            correct += int(
                (model(x[start : start + batch_size]).argmax(1) == y[start : start + batch_size]).sum()
            )
    return correct / len(x)


def train(*, epochs: int, seed: int, batch_size: int = 64, lr: float = 3e-3) -> tuple[Net, float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = train_split()
    x, y = to_tensor(images), torch.from_numpy(labels)
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(TRAIN_SIZE / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total_loss = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            batch = random_affine(x[index], generator)
            loss = F.nll_loss(model(batch), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(index)
        print(
            f"epoch {epoch:2d}/{epochs}  train loss {total_loss / len(x):.4f}  "
            f"{time.perf_counter() - started:6.1f}s",
            flush=True,
        )
    return model, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20201027)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for determinism)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the state_dict is saved")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, seconds = train(epochs=args.epochs, seed=args.seed)
    images, labels = heldout_split()
    accuracy = evaluate(model, to_tensor(images), torch.from_numpy(labels))
    torch.save(model.state_dict(), args.out)
    print(
        f"held-out accuracy {accuracy:.2%} on {len(labels)} images; "
        f"training {seconds:.0f}s on {args.threads} threads; saved {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
