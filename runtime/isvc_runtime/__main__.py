"""``python -m isvc_runtime --model-store DIR [--http-port N] [--model-name NAME]``."""

from .server import run

if __name__ == "__main__":
    run()
