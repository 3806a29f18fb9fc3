"""The README's commands and code, run so that they cannot rot (issue 31).

What counts as a command in README.md (the one convention; keep the README to it):

- A ```console block is a shell session: a line starting with "$ " is a command, the lines after
  it (up to the next "$ ") are its output as pasted from a real run. The command is run and every
  pasted output line must match a line of the real output with its numbers wildcarded, so the
  pasted output keeps the CLI's current wording. A pasted line "..." (or "…") stands for lines
  left out; a line ending in "..." matches as a prefix.
- A ```sh, ```bash or ```shell block holds commands only, one per line; comments ("# ..." on a
  line of its own or at the end of one) are ignored and a trailing backslash continues a line.
- A ```python block is a script: it is run as it stands (it must be self-contained).
- Any other fence (```, ```yaml, ...) is never run, so it must not hold a command
  (test_no_command_outside_a_runnable_block).

Commands are of two kinds, and only these (anything else fails: keep the README checkable):
`make TARGET [VAR=VALUE ...]` is checked to be a target of the Makefile, not run (they set up
.venv or take minutes); `rlkit VERB ...` is run through the venv's `rlkit` entry point and must
exit 0 and print what that verb prints on success. Each block runs in a fresh temporary folder of
its own, its commands in order, so a block is a session that chains (a train's `--run-dir
runs/x` is the next command's RUN_DIR) and nothing is written into the checkout; `examples/` is
linked into that folder, as if the commands ran from the repository root. One test per command
(and per python block), so that each failure is visible on its own; a command whose block has an
earlier command that failed fails naming it. Every relative link of the README must exist.

The commands train for real (a few seconds to ~30 s each on 2 cores): marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUNNABLE = {"console": "console", "sh": "sh", "bash": "sh", "shell": "sh", "python": "python"}
TIMEOUT_S = 600


@dataclass
class Command:
    block: int  # index of the README block it is in
    line: int  # 1-based line in README.md
    text: str  # the command as shown ("python" blocks: the whole script)
    kind: str  # "rlkit" | "make" | "python" | "other"
    output: list[str] = field(default_factory=list)  # pasted output (console blocks)

    @property
    def id(self) -> str:
        shown = self.text if self.kind != "python" else "python block"
        return f"L{self.line} {shown}"[:110]


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(info string, line number of the first content line, content lines) of each fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, info, start, body = m.group(2), m.group(3).lower(), i + 2, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((info, start, body))
        i += 1
    return blocks


def _kind(command: str) -> str:
    words = shlex.split(command)
    if not words:
        return "other"
    return {"rlkit": "rlkit", "make": "make"}.get(words[0], "other")


def _strip_comment(line: str) -> str:
    """A shell line without its trailing comment (a # that starts a word, outside quotes)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes: leave it for the run to fail on
        return line.strip()
    return shlex.join(words) if words else ""


def readme_commands(text: str | None = None) -> list[Command]:
    text = README.read_text() if text is None else text
    commands: list[Command] = []
    for b, (info, start, body) in enumerate(fenced_blocks(text)):
        style = RUNNABLE.get(info)
        if style == "python":
            commands.append(Command(b, start, "\n".join(body) + "\n", "python"))
        elif style == "console":
            for offset, line in enumerate(body):
                if line.startswith("$ "):
                    cmd = _strip_comment(line[2:])
                    commands.append(Command(b, start + offset, cmd, _kind(cmd)))
                elif commands and commands[-1].block == b and line.strip():
                    commands[-1].output.append(line.rstrip())
        elif style == "sh":
            pending, first = "", None
            for offset, line in enumerate(body):
                if first is None:
                    first = start + offset
                if line.rstrip().endswith("\\"):
                    pending += line.rstrip()[:-1] + " "
                    continue
                cmd = _strip_comment(pending + line)
                if cmd:
                    commands.append(Command(b, first, cmd, _kind(cmd)))
                pending, first = "", None
    return commands


COMMANDS = readme_commands()
RUN = [c for c in COMMANDS if c.kind in ("rlkit", "python", "other")]
MAKE = [c for c in COMMANDS if c.kind == "make"]


# ---------------------------------------------------------------- the README's blocks as sessions


def _rlkit() -> list[str]:
    exe = Path(sys.executable).with_name("rlkit")
    return [str(exe)] if exe.exists() else [sys.executable, str(ROOT / "cli.py")]


def _env() -> dict[str, str]:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy", "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)  # as a user's shell has it: rlkit comes from the venv, examples/ from the folder
    return env


@dataclass
class Result:
    ok: bool
    detail: str


class Sessions:
    """One temporary folder per README block; each block's commands run once, in order."""

    def __init__(self, base: Path):
        self.base = base
        self.results: dict[int, Result] = {}  # index in RUN -> result

    def folder(self, block: int) -> Path:
        folder = self.base / f"block{block}"
        if not folder.exists():
            folder.mkdir(parents=True)
            if (ROOT / "examples").exists():
                (folder / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
        return folder

    def run(self, index: int) -> Result:
        if index in self.results:
            return self.results[index]
        cmd = RUN[index]
        for earlier in range(index):  # the block's earlier commands first: their runs are this one's input
            if RUN[earlier].block == cmd.block and not self.run(earlier).ok:
                result = Result(False, f"an earlier command of this block failed: `{RUN[earlier].text.strip()}` "
                                       f"(README line {RUN[earlier].line})")
                self.results[index] = result
                return result
        self.results[index] = result = _execute(cmd, self.folder(cmd.block))
        return result


def _execute(cmd: Command, cwd: Path) -> Result:
    if cmd.kind == "other":
        return Result(False, f"README line {cmd.line}: `{cmd.text}` is neither `rlkit ...` nor `make ...`, so "
                             "this test cannot check it; keep it out of runnable blocks")
    if cmd.kind == "python":
        script = cwd / f"readme_line{cmd.line}.py"
        script.write_text(cmd.text)
        argv = [sys.executable, script.name]
    else:
        words = shlex.split(cmd.text)
        if words[1:2] == ["tensorboard"]:
            return Result(False, f"README line {cmd.line}: `rlkit tensorboard` serves until stopped; "
                                 "show it in prose, not in a runnable block")
        argv = _rlkit() + words[1:]
    try:
        proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Result(False, f"timed out after {TIMEOUT_S} s: {cmd.text}")
    where = f"README line {cmd.line}: `{cmd.text.strip() if cmd.kind != 'python' else 'python block'}`"
    shown = f"\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    if proc.returncode != 0:
        return Result(False, f"{where} exited {proc.returncode}{shown}")
    problem = _check_output(cmd, proc.stdout)
    if problem:
        return Result(False, f"{where}: {problem}{shown}")
    return Result(True, proc.stdout)


NUMBER = r"[-+−]?(?:\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?|nan|inf)"


def output_pattern(line: str) -> re.Pattern:
    """A pasted output line as a regex: numbers (and the timestamp of run names) match any number."""
    line = line.strip()
    prefix = line.endswith("...") or line.endswith("…")
    if prefix:
        line = line.rstrip(".…").rstrip()
    parts = re.split(NUMBER, line)
    body = NUMBER.join(re.escape(p) for p in parts)
    return re.compile("^" + body + ("" if prefix else "$"))


def _check_output(cmd: Command, stdout: str) -> str | None:
    lines = [ln.strip() for ln in stdout.splitlines()]
    for shown in cmd.output:
        if shown.strip() in ("...", "…"):
            continue
        pattern = output_pattern(shown)
        if not any(pattern.match(ln) for ln in lines):
            return f"no output line has the shape of the README's `{shown.strip()}`"
    if cmd.kind != "rlkit":
        return None
    words = shlex.split(cmd.text)
    verb = words[1] if len(words) > 1 else ""
    if verb == "train" and not any(re.match(r"^(run \S+: |\d+ runs of )", ln) for ln in lines):
        return "no summary line (`run RUN_DIR: ...`) on stdout"
    if verb == "eval":
        if "--json" in words:
            try:
                report = json.loads(lines[-1])
            except (IndexError, json.JSONDecodeError):
                return "--json did not print a JSON object as its last line"
            if "mean_return" not in report:
                return "the JSON report has no mean_return"
        elif not re.search(r"± \S+ over \d+ episodes", stdout):
            return "no `mean ± std over N episodes` on stdout"
    if verb in ("render", "compare") and not any(ln.startswith("wrote ") for ln in lines):
        return "no `wrote FILE` line on stdout"
    if verb == "list" and "algorithms:" not in stdout:
        return "no algorithm list on stdout"
    return None


@pytest.fixture(scope="module")
def sessions():
    base = Path(tempfile.mkdtemp(prefix="rlkit-readme-"))
    yield Sessions(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(RUN)), ids=[c.id for c in RUN])
def test_readme_command_runs(sessions, index):
    result = sessions.run(index)
    assert result.ok, result.detail


# ---------------------------------------------------------------- cheap checks


def makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_./-]+(?:\s+[A-Za-z0-9_./-]+)*)\s*:(?!=)", line)
        if m and not line.startswith(("\t", " ")):
            targets.update(m.group(1).split())
    return targets


@pytest.mark.parametrize("cmd", MAKE, ids=[c.id for c in MAKE])
def test_readme_make_line_is_a_makefile_target(cmd):
    words = [w for w in shlex.split(cmd.text)[1:] if "=" not in w and not w.startswith("-")]
    assert words, f"README line {cmd.line}: `{cmd.text}` names no target"
    missing = [w for w in words if w not in makefile_targets()]
    assert not missing, f"README line {cmd.line}: {missing} not a target of the Makefile"


def test_the_readme_has_commands_of_each_kind():
    kinds = {c.kind for c in COMMANDS}
    assert {"rlkit", "make", "python"} <= kinds, kinds
    assert {"run", "test", "test-fast"} <= {shlex.split(c.text)[1] for c in MAKE}


def test_no_command_outside_a_runnable_block():
    """A command in a fence this test does not run (``` or ```text) would rot unseen."""
    for info, start, body in fenced_blocks(README.read_text()):
        if info in RUNNABLE:
            continue
        for offset, line in enumerate(body):
            assert not re.match(r"^\s*(\$\s+)?(rlkit|make|python)\s", line), (
                f"README line {start + offset}: `{line.strip()}` is in a ```{info} block, which is never run; "
                "use ```console (with $ prompts), ```sh or ```python")


LINKS = sorted({m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
                if not re.match(r"^[a-z]+:", m)})


@pytest.mark.parametrize("target", LINKS)
def test_readme_link_exists(target):
    assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_the_convention_parses_what_it_says():
    sample = """
```console
$ rlkit train --algo ppo --env CartPole-v1 --run-dir runs/x   # a comment
step 5120: eval 292.30 ± 31.00 over 10 episodes, best 292.30, elapsed 1.9 s
...
$ rlkit eval runs/x
```

```bash
make run    # sets up .venv
rlkit train --algo ppo \\
  --env CartPole-v1
# a comment line
```

```
rlkit list
```
"""
    got = readme_commands(sample)
    assert [(c.kind, c.text) for c in got] == [
        ("rlkit", "rlkit train --algo ppo --env CartPole-v1 --run-dir runs/x"), ("rlkit", "rlkit eval runs/x"),
        ("make", "make run"), ("rlkit", "rlkit train --algo ppo --env CartPole-v1")]
    assert got[0].output == ["step 5120: eval 292.30 ± 31.00 over 10 episodes, best 292.30, elapsed 1.9 s", "..."]
    assert got[0].block == got[1].block != got[2].block
    pattern = output_pattern(got[0].output[0])
    assert pattern.match("step 10240: eval 500.00 ± 0.00 over 10 episodes, best 500.00, elapsed 12.3 s")
    assert not pattern.match("step 10240: eval 500.00 ± 0.00 over 10 episodes, best 500.00, elapsed 12.3 s, solved")
    assert output_pattern("run runs/x: solved after 15360 steps in ...").match(
        "run runs/x: solved after 20480 steps in 7.1 s, final eval 500.00 ± 0.00")
