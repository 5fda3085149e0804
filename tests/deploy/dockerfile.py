"""A small Dockerfile reader for the deploy tests: stages, and their instructions.

Only what deploy/docker/Dockerfile uses: ``ARG``, ``FROM ... AS``, ``ENV K=V ...``,
``COPY [--from=X] SRC... DST``, ``RUN`` (shell form), ``USER``, ``WORKDIR``, ``VOLUME``
(JSON form), continuation lines and comments. Anything else is kept as raw text.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    op: str  # upper case, e.g. "RUN"
    args: str  # the rest of the line, continuations joined with a space


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, op: str) -> list[Instruction]:
        return [i for i in self.instructions if i.op == op]

    def env(self) -> dict[str, str]:
        """The stage's ENV values in order (later wins); ``$VAR`` left unexpanded."""
        out: dict[str, str] = {}
        for inst in self.of("ENV"):
            for pair in shlex.split(inst.args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {inst.args!r}: only the KEY=VALUE form is supported"
                out[key] = value
        return out

    def volumes(self) -> list[str]:
        return [v for inst in self.of("VOLUME") for v in json.loads(inst.args)]

    def last(self, op: str) -> str | None:
        found = self.of(op)
        return found[-1].args if found else None


def instructions(text: str) -> list[Instruction]:
    """The logical instructions of a Dockerfile, continuation lines joined."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        full = pending + stripped
        pending = ""
        op, _, args = full.partition(" ")
        out.append(Instruction(op.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return out


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages in order) of the Dockerfile at ``path``."""
    args: dict[str, str] = {}
    result: list[Stage] = []
    for inst in instructions(path.read_text()):
        if inst.op == "FROM":
            words = inst.args.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace(f"${{{key}}}", value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, name))
        elif not result and inst.op == "ARG":
            key, _, value = inst.args.partition("=")
            args[key] = value
        else:
            assert result, f"{inst.op} before the first FROM"
            result[-1].instructions.append(inst)
    return args, result
