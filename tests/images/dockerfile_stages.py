"""The Dockerfile as data, read with dockerfile-parse: stages, their instructions, the build context.

Shared by the image tests. `materialize` lays out a target's files the way a build would (WORKDIR,
COPY from the .dockerignore-filtered context or from another stage) so its RUN commands can be run
for real outside Docker.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]


def parse_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """Stages by name (``FROM image AS name``), each with its instructions in order."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in DockerfileParser(path=str(path)).structure:
        kind, value = item["instruction"], item["value"]
        if kind == "FROM":
            words = value.split()
            if len(words) != 3 or words[1].upper() != "AS":
                raise ValueError(f"line {item['startline'] + 1}: every stage must be named: FROM {value}")
            current = stages[words[2]] = Stage(name=words[2], base=words[0])
        elif current is not None:
            current.instructions.append((kind, value))
    return stages


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target and the stages it is built FROM, the first ancestor first."""
    result = [stages[target]]
    while result[0].base in stages:
        result.insert(0, stages[result[0].base])
    return result


def effective(stages: dict[str, Stage], target: str, instruction: str) -> str | None:
    """The value in force at the end of the target (the last one along its chain)."""
    values = [v for stage in chain(stages, target) for v in stage.values(instruction)]
    return values[-1] if values else None


def exec_form(value: str) -> list[str]:
    """ENTRYPOINT/CMD in exec (JSON) form; shell form is refused (signals would not reach python)."""
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(word, str) for word in parsed):
        raise ValueError(f"not an exec-form list: {value}")
    return parsed


def env_of(stages: dict[str, Stage], target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in chain(stages, target):
        for value in stage.values("ENV"):
            for word in shlex.split(value):
                key, _, val = word.partition("=")
                env[key] = val
    return env


def copy_parts(value: str) -> tuple[str | None, list[str], str]:
    """``COPY [--from=stage] SRC... DEST`` → (from-stage, sources, destination)."""
    words = shlex.split(value)
    source_stage = None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            source_stage = flag.removeprefix("--from=")
    return source_stage, words[:-1], words[-1]


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def build_context(root: Path = REPO_ROOT) -> set[str]:
    """Every path Docker sends as the context (docker-py implements Docker's .dockerignore rules)."""
    return set(exclude_paths(str(root), dockerignore_patterns(root / ".dockerignore")))


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def materialize(
    stages: dict[str, Stage], target: str, root: Path, context: set[str]
) -> list[tuple[Path, str]]:
    """Lay out the target's files under ``root`` (its ``/``); return its RUN commands, each with the
    WORKDIR it runs in. Only files are simulated: nothing is run, base images contribute nothing."""
    workdir = root
    runs: list[tuple[Path, str]] = []
    for stage in chain(stages, target):
        for kind, value in stage.instructions:
            if kind == "WORKDIR":
                workdir = _inside(root, value) if value.startswith("/") else workdir / value
                workdir.mkdir(parents=True, exist_ok=True)
            elif kind in ("COPY", "ADD"):
                from_stage, sources, dest = copy_parts(value)
                if from_stage is not None:
                    stage_root = root.parent / f"{root.name}.{from_stage}"
                    if not stage_root.exists():
                        materialize(stages, from_stage, stage_root, context)
                    pairs = [(path, s) for s in sources for path in _matches(stage_root, s)]
                else:
                    pairs = [(REPO_ROOT / s, s) for s in sources]
                target_dir = _inside(root, dest) if dest.startswith("/") else workdir / dest
                for path, source in pairs:
                    _copy(path, source, target_dir, dest.endswith("/") or len(pairs) > 1, from_stage, context)
            elif kind == "RUN":
                runs.append((workdir, value))
    return runs


def _matches(root: Path, source: str) -> list[Path]:
    """A COPY --from source inside a stage's layout, its wildcards expanded (the path itself if none)."""
    if any(c in source for c in "*?["):
        return sorted(root.glob(source.lstrip("/")))
    return [_inside(root, source)]


def lay_out_with_requirements(stages: dict[str, Stage], target: str, root: Path, context: set[str],
                              python: str) -> list[tuple[Path, str]]:
    """``materialize`` the target after running the requirements stage's RUN commands (with ``python``), so
    that the requirements-EXTRA.txt files it writes from pyproject.toml exist for the target's COPY --from."""
    for workdir, command in materialize(stages, "requirements", root.parent / f"{root.name}.requirements",
                                        context):
        if command.startswith(("groupadd", "useradd")):
            continue  # the base stage's user: needs root and a real image, writes no file the target copies
        assert command.startswith("python -c "), f"unexpected RUN in requirements: {command}"
        subprocess.run([python, "-c", shlex.split(command)[2]], cwd=workdir, check=True, timeout=60)
    return materialize(stages, target, root, context)


def _copy(path: Path, source: str, dest: Path, into: bool, from_stage: str | None, context: set[str]) -> None:
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = file.relative_to(path)
            if from_stage is None and str(Path(source.rstrip("/")) / relative) not in context:
                continue
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, dest / relative)
    else:
        if from_stage is None and source not in context:
            raise FileNotFoundError(f"COPY {source}: excluded from the build context")
        final = dest / path.name if into else dest
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, final)
