"""A module-level ``handle(data, context)`` (TorchServe's function entry point): called once with
``data=None`` to initialize, then per batch."""

import os

_state = {}


def handle(data, context):
    if data is None:
        _state["model_dir_listing"] = sorted(os.listdir(context.system_properties["model_dir"]))
        return None
    return [{"upper": row["data"].upper(), "model": context.model_name} for row in data]
