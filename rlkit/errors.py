"""The exception types the CLI maps to exit codes (docs/architecture.md §4), and "did you mean"."""

import difflib


class UsageError(Exception):
    """Bad input from the user. The CLI prints the message as one line and exits with 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by rlkit.commands: a run stops as it does on Ctrl-C
    (run.json ``status: interrupted``, or no run directory left if nothing was committed)."""


def did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), shortened."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
