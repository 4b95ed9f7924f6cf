"""``python -m isvc_runtime --model-store DIR [--http-port N] [--model-name NAME]``."""

import gc

# Importing torch builds ~300k long-lived objects; with the collector on, it runs dozens of full
# passes over them during the import (~0.1-0.15 s of the cold start) and frees almost nothing.
# The collector comes back on once the models are loaded (server.start_loading), after gc.freeze().
gc.disable()

from .server import run  # noqa: E402

if __name__ == "__main__":
    run(gc_disabled=True)
