"""The one exception type that means "the user gave bad input" (exit code 2)."""

import difflib


class UsageError(Exception):
    """Bad input from the user. The CLI prints the message as one line and exits with 2."""


def did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""
