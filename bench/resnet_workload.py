"""The ResNet-18 workload of the peers benches, made here: nothing is downloaded.

- weights: torchvision's ResNet-18 initialised with ``torch.manual_seed(SEED)``, saved once as a state dict;
- ``index_to_name.json``: 1000 made-up labels (``class-000`` ...);
- JPEGs: 224x224 RGB images from a seeded generator (smooth colour fields plus noise, so every image gives
  the network a different input);

all under ``$TORCH_ISVC_CACHE/bench-resnet18`` (default ``~/.cache/torch-isvc``), outside the repository.
The model store is one archive of these with TorchServe's stock ``image_classifier`` handler
(bench/resnet18_model.py as the model file), served unchanged by TorchServe and by our runtime.
:func:`compare_answers` is the correctness rule for answers of random weights, whose top-5s are nearly
uniform.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MODEL_FILE = BENCH_DIR / "resnet18_model.py"
MODEL_NAME = "resnet18"
SEED = 0
IMAGES = 8
TOLERANCE = 1e-4
CACHE = Path(os.environ.get("TORCH_ISVC_CACHE") or Path.home() / ".cache" / "torch-isvc") / "bench-resnet18"


def weights_path() -> Path:
    """The seeded weights (made once; torch's seeded initialisation makes the same file every time)."""
    path = CACHE / f"resnet18-seed{SEED}.pt"
    if not path.is_file():
        import torch
        from torchvision.models import resnet18

        torch.manual_seed(SEED)
        net = resnet18()
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(net.state_dict(), partial)
        partial.replace(path)
    return path


def index_to_name_path() -> Path:
    path = CACHE / "index_to_name.json"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({str(i): f"class-{i:03d}" for i in range(1000)}))
    return path


def jpeg_paths(count: int = IMAGES) -> list[Path]:
    """``count`` 224x224 JPEGs, made once from a seeded generator."""
    paths = [CACHE / f"image-{i}.jpg" for i in range(count)]
    if all(path.is_file() for path in paths):
        return paths
    import numpy as np
    from PIL import Image

    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for path in paths:
        field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
            (224, 224), Image.BICUBIC
        )
        noisy = np.asarray(field, dtype=np.int16) + rng.integers(-24, 25, (224, 224, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return paths


def v1_body(jpeg: Path) -> bytes:
    """A KServe v1 request with one base64 JPEG instance (what TorchServe's envelope and ours both read)."""
    return json.dumps({"instances": [{"data": base64.b64encode(jpeg.read_bytes()).decode()}]}).encode()


def build_store(out_dir: Path) -> Path:
    """``OUT/model-store/resnet18.mar`` (stock ``image_classifier`` handler, ``index_to_name.json``) and
    ``OUT/config/config.properties``, by the MNIST example's own builder; returns ``out_dir``."""
    from support.modules import load_module

    builder = load_module(
        REPO_ROOT / "examples" / "mnist" / "build_model_store.py", "bench_build_model_store"
    )
    archive = builder.build_archive(
        out_dir / "model-store",
        model_name=MODEL_NAME,
        handler=Path("image_classifier"),  # a stock handler's name, passed to the archiver as it is
        model_file=MODEL_FILE,
        serialized_file=weights_path(),
        extra_files=[index_to_name_path()],
    )
    (out_dir / "config").mkdir(parents=True, exist_ok=True)
    (out_dir / "config" / "config.properties").write_text(
        builder.config_properties(
            model_name=MODEL_NAME, mar_name=archive.name, model_store=str(archive.parent)
        )
    )
    return out_dir


def top_classes(answer: bytes) -> dict[str, float]:
    """The ``{label: probability}`` of a v1 answer's only prediction."""
    predictions = json.loads(answer)["predictions"]
    if len(predictions) != 1 or not isinstance(predictions[0], dict):
        raise ValueError(f"expected one {{label: probability}} prediction, got {str(predictions)[:200]}")
    return {str(label): float(p) for label, p in predictions[0].items()}


def answer_ok(answer: bytes) -> bool:
    try:
        top = top_classes(answer)
    except (ValueError, KeyError, TypeError):
        return False
    return len(top) == 5 and all(0.0 <= p <= 1.0 for p in top.values())


def compare_answers(
    ours: Mapping[str, float], theirs: Mapping[str, float], tolerance: float = TOLERANCE
) -> list[str]:
    """What differs between two top-k answers beyond ``tolerance`` (empty: they agree).

    Random weights give nearly uniform top-5s, so labels whose probabilities are within ``tolerance`` of a
    neighbour may swap places or (at the cut) be replaced by a tied one. The rule: the probabilities by rank
    agree within ``tolerance``; a label in both answers has the same probability within ``tolerance``; a label
    in only one is tied (within ``tolerance``) with the other answer's last; and two labels in both answers
    whose reference probabilities differ by more than ``tolerance`` come in the same order."""
    problems = []
    ranked_ours = sorted(ours.values(), reverse=True)
    ranked_theirs = sorted(theirs.values(), reverse=True)
    if len(ranked_ours) != len(ranked_theirs):
        return [f"{len(ranked_ours)} classes vs {len(ranked_theirs)}"]
    for rank, (a, b) in enumerate(zip(ranked_ours, ranked_theirs, strict=True)):
        if abs(a - b) > tolerance:
            problems.append(f"rank {rank + 1}: {a:.6f} vs {b:.6f}")
    for label in ours.keys() & theirs.keys():
        if abs(ours[label] - theirs[label]) > tolerance:
            problems.append(f"{label}: {ours[label]:.6f} vs {theirs[label]:.6f}")
    for label, mine, other in [(k, ours, theirs) for k in ours.keys() - theirs.keys()] + [
        (k, theirs, ours) for k in theirs.keys() - ours.keys()
    ]:
        if abs(mine[label] - min(other.values())) > tolerance:
            problems.append(f"{label} ({mine[label]:.6f}) in one answer only, not tied with the other's last")
    common = sorted(ours.keys() & theirs.keys(), key=lambda k: -theirs[k])
    order = sorted(common, key=lambda k: -ours[k])
    for i, a in enumerate(common):
        for b in common[i + 1 :]:
            if theirs[a] - theirs[b] > tolerance and order.index(a) > order.index(b):
                problems.append(f"order of {a} and {b} differs")
    return problems


def check_equal(
    answers: Mapping[str, Sequence[bytes]], side: str, reference: str, tolerance: float = TOLERANCE
) -> list[str]:
    """:func:`compare_answers` for every image's answer of ``side`` against ``reference``'s."""
    problems = []
    for index, (ours, theirs) in enumerate(zip(answers[side], answers[reference], strict=True)):
        problems += [
            f"image {index}: {p}" for p in compare_answers(top_classes(ours), top_classes(theirs), tolerance)
        ]
    return problems
