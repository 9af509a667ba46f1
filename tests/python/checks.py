"""What the Python acceptance scripts share: a failed check, and model names as
Ollama compares them."""

from __future__ import annotations

from typing import Any


class CheckFailed(AssertionError):
    pass


def check(condition: Any, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def canonical(name: str) -> str:
    """Ollama treats `llama3.2` and `llama3.2:latest` as one model."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def same_model(a: str | None, b: str) -> bool:
    return a is not None and canonical(a) == canonical(b)


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def report(script: str, failed: list[str], total: int, base: str) -> int:
    """Prints the outcome of a suite's checks; the exit status."""
    if failed:
        print(
            f"{script}: {len(failed)} of {total} checks failed against {base}: {', '.join(failed)}",
            flush=True,
        )
        return 1
    print(f"{script}: all {total} checks passed against {base}", flush=True)
    return 0
