"""What starting the runtime imports: torchvision and captum stay out unless a handler asks for them."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split())


def test_runtime_and_builtin_vision_handlers_import_neither_torchvision_nor_captum() -> None:
    loaded = _modules_after(
        "import isvc_runtime.server, isvc_runtime.explain.endpoints, isvc_runtime.handlers.image_classifier,"
        " isvc_runtime.handlers.transforms, isvc_runtime.handlers.tensor"
    )
    assert "torch" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("torchvision", "captum")}
    assert "torch._dynamo" not in loaded


def test_mnist_example_handler_imports_no_torchvision() -> None:
    loaded = _modules_after(
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location('mnist_handler', 'examples/mnist/mnist_handler.py')\n"
        "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
        "assert module.MNISTDigitClassifier"
    )
    assert not {m for m in loaded if m.split(".")[0] == "torchvision"}
