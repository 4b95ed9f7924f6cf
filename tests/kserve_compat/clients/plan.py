"""What every client script shares (runs in the clients' own venv, never imports this repository's code).

A script is run as ``python SCRIPT.py PLAN.json``; the plan names the server, the model, the digits
(``fp32``: a ``.npy`` of normalised ``float32 [N, 1, 28, 28]``; ``pngs``: a JSON list of base64 PNGs) and the
calls, each ``{"id", "call", ...options}``. The script prints one JSON object: for each call id,
``{"ok": true, "value": ...}`` or ``{"ok": false, "error": "Type: message"}``: one failing call never
stops the others, so the tests can tell exactly which feature is missing.
"""

from __future__ import annotations

import base64
import json
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def load_plan() -> dict[str, Any]:
    with open(sys.argv[1]) as file:
        return json.load(file)


def fp32_batches(plan: dict[str, Any]) -> Iterator[np.ndarray]:
    digits = np.load(plan["fp32"]).astype(np.float32)
    for start in range(0, len(digits), plan["batch"]):
        yield digits[start : start + plan["batch"]]


def png_batches(plan: dict[str, Any]) -> Iterator[list[bytes]]:
    with open(plan["pngs"]) as file:
        pngs = [base64.b64decode(item) for item in json.load(file)]
    for start in range(0, len(pngs), plan["batch"]):
        yield pngs[start : start + plan["batch"]]


def classes(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def run(plan: dict[str, Any], calls: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
    """Run each call of the plan with its handler (``calls[call["call"]]``) and print the results."""
    results: dict[str, Any] = {}
    for call in plan["calls"]:
        try:
            results[call["id"]] = {"ok": True, "value": calls[call["call"]](call)}
        except Exception as exc:  # every failure is a result to report, not the end of the script
            message = f"{type(exc).__name__}: {exc}"
            if plan.get("verbose"):
                message += "\n" + traceback.format_exc()
            results[call["id"]] = {"ok": False, "error": message[:2000]}
    json.dump(results, sys.stdout)
