"""What each Dockerfile target is built from, and the content hash build.sh labels its image with.

A target's inputs are the Dockerfile's global ARGs, the text of every stage it is built from (its FROM
chain and the stages it copies from), and the files of the build context those stages COPY: the runtime
image is keyed on runtime/isvc_runtime/ and pyproject.toml, not on operator/ or README.md. An image whose
label equals its key is current; build.sh rebuilds it (and the node re-imports it) only when the key moves.

    python3 e2e/images/source_key.py REPO TARGET [SALT]   # the key (SALT: the base image's id, build args)

Standard library only: build.sh runs it with the host's python3, before any virtual environment exists.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

IGNORED_PARTS = ("__pycache__", ".egg-info")


@dataclass
class Stage:
    name: str
    base: str
    text: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)  # build-context sources of its COPY/ADD
    copies_from: list[str] = field(default_factory=list)  # stages its COPY --from= reads


def instructions(dockerfile: str) -> list[str]:
    """One string per instruction: comments and blank lines dropped, continuation lines joined."""
    result: list[str] = []
    pending = ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        result.append(pending + stripped)
        pending = ""
    if pending:
        result.append(pending.strip())
    return result


def parse(dockerfile: str) -> tuple[list[str], dict[str, Stage]]:
    """The global ARG instructions (before the first FROM) and the named stages."""
    global_args: list[str] = []
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in instructions(dockerfile):
        keyword, _, value = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = value.split()
            if len(words) != 3 or words[1].upper() != "AS":
                raise ValueError(f"every stage must be named: FROM {value}")
            current = stages[words[2]] = Stage(name=words[2], base=words[0])
        elif current is None:
            global_args.append(instruction)
            continue
        if keyword in ("COPY", "ADD"):
            words = shlex.split(value)
            flags = [w for w in words if w.startswith("--")]
            sources = [w for w in words if not w.startswith("--")][:-1]
            from_stage = next((f.removeprefix("--from=") for f in flags if f.startswith("--from=")), None)
            if from_stage is None:
                current.copies += sources
            else:
                current.copies_from.append(from_stage)
        current.text.append(instruction)
    return global_args, stages


def stages_of(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target and every stage it is built from or copies from, each once, in a stable order."""
    found: dict[str, Stage] = {}
    pending = [target]
    while pending:
        name = pending.pop(0)
        if name in found or name not in stages:
            continue
        stage = found[name] = stages[name]
        pending += [stage.base, *stage.copies_from]
    return sorted(found.values(), key=lambda s: list(stages).index(s.name))


def context_sources(dockerfile: str, target: str) -> list[str]:
    """The build-context paths the target's stages COPY (files or directories, as written)."""
    _, stages = parse(dockerfile)
    if target not in stages:
        raise ValueError(f"no stage named {target}")
    return sorted({source.rstrip("/") for stage in stages_of(stages, target) for source in stage.copies})


def tracked_files(repo: Path, paths: list[str]) -> list[str]:
    """The files git tracks (or would track: untracked, not ignored) under ``paths``, sorted."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--", *paths],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    return sorted(f for f in listed if f and not any(p in f for p in IGNORED_PARTS)
                  and not f.endswith(".pyc") and (repo / f).is_file())


def source_key(repo: Path, target: str, salt: str = "") -> str:
    """The target's content hash: its stages' text, the global ARGs, .dockerignore, the files it copies."""
    dockerfile = (repo / "Dockerfile").read_text()
    global_args, stages = parse(dockerfile)
    digest = hashlib.sha256()
    for part in (salt, *global_args, *(line for s in stages_of(stages, target) for line in s.text)):
        digest.update(part.encode() + b"\n")
    for name in [".dockerignore", *tracked_files(repo, context_sources(dockerfile, target))]:
        path = repo / name
        digest.update(f"{name} {hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else '-'}\n"
                      .encode())
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    print(source_key(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else ""))
