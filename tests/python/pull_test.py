"""Pulls a model through llm-router with the official `ollama` client, streamed,
and checks what an Ollama user would see (driven by
crates/coordinator/tests/python_clients.rs):

- progress per layer digest never goes backwards, never passes its total, and
  the total holds still;
- the stream ends in `success`, or with `--fail-node NAME` in an error that
  names that node;
- afterwards `list()` through the router shows the model.

Usage: pull_test.py URL MODEL [--fail-node NAME]
Exit status 0 when every check passed, 1 otherwise, 3 when `ollama` is missing.
"""

from __future__ import annotations

import argparse
import sys

try:
    import ollama
except ImportError as missing:  # pragma: no cover - reported by the Rust harness
    print(f"missing package: {missing}", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("--fail-node")
    args = parser.parse_args()

    client = ollama.Client(host=args.url)
    seen: dict[str, tuple[int, int]] = {}
    statuses: list[str] = []
    failures: list[str] = []
    error: str | None = None
    try:
        for part in client.pull(args.model, stream=True):
            statuses.append(part.status or "")
            if part.digest and part.total is not None:
                completed = part.completed or 0
                if completed > part.total:
                    failures.append(f"{part.digest}: completed {completed} > total {part.total}")
                if part.digest in seen:
                    total, before = seen[part.digest]
                    if completed < before:
                        failures.append(f"{part.digest}: went back from {before} to {completed}")
                    if part.total != total:
                        failures.append(f"{part.digest}: total moved from {total} to {part.total}")
                seen[part.digest] = (part.total, completed)
    except ollama.ResponseError as e:
        error = e.error

    if not seen:
        failures.append(f"no layer progress in {statuses}")
    if args.fail_node:
        if error is None or args.fail_node not in error:
            failures.append(f"expected an error naming {args.fail_node}, got {error!r}")
    else:
        if error is not None:
            failures.append(f"the pull failed: {error}")
        elif statuses[-1:] != ["success"]:
            failures.append(f"the last status is not success: {statuses[-3:]}")
        listed = [m.model for m in client.list().models]
        wanted = args.model if ":" in args.model else f"{args.model}:latest"
        if wanted not in listed:
            failures.append(f"{wanted} is not in list(): {listed}")

    for failure in failures:
        print(f"FAIL {failure}")
    print(f"pull of {args.model}: {len(statuses)} progress lines, {len(seen)} layers, "
          f"ended with {error or statuses[-1] if statuses else error!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
