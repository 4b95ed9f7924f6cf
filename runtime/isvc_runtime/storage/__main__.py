"""``python -m isvc_runtime.storage SRC_URI DEST_DIR``: exit 0 when the model is in place, 1 with a
single-line error otherwise (2 for bad usage)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from isvc_runtime.storage.errors import StorageError, scrub
from isvc_runtime.storage.initializer import initialize


class Terminated(Exception):
    """SIGTERM (the pod is being deleted): unwind so the staging directory is removed."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m isvc_runtime.storage",
        description="Copy a model from gs://, s3://, http(s)://, pvc://, file:// or a path into DEST_DIR.",
    )
    parser.add_argument("src_uri")
    parser.add_argument("dest_dir", type=Path)
    args = parser.parse_args(argv)
    interval = float(os.environ.get("STORAGE_PROGRESS_SECONDS", "5"))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        initialize(args.src_uri, args.dest_dir, progress_interval=interval)
    except StorageError as e:
        print(scrub(f"storage-initializer: error: {e}"), file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, Terminated) as e:
        print("storage-initializer: error: interrupted", file=sys.stderr, flush=True)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:  # anything unforeseen still gets one line, never a traceback with secrets
        print(scrub(f"storage-initializer: error: {type(e).__name__}: {e}"), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
