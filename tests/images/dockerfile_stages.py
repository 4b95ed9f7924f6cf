"""The Dockerfile as data, read with dockerfile-parse: stages, their instructions, the build context.

Shared by the image tests (the Dockerfile's static checks; the built images are probed in e2e/images/).
"""

from __future__ import annotations

import json
import shlex
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
