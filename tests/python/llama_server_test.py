#!/usr/bin/env python3
"""Acceptance test: the official Python clients, through the router, against a
real llama.cpp server (`llama-cpp-python[server]`) as an OpenAI-style node.

Usage:
    python3 tests/python/llama_server_test.py ROUTER_URL [options]

ROUTER_URL is a router with the server as its node (see
crates/coordinator/tests/llama_cpp.rs, which starts both), serving the tiny
random-weight model of tests/python/make_tiny_gguf.py twice: as the chat model
(--model, default `tiny`) and as the embedding model (--embed-model, default
`tiny-embed`). The text is gibberish; what is checked is the shape of the
answers and their counters.

`ollama.Client(host=ROUTER_URL)` chats and generates, streamed and not (the
router turns these into /v1 requests for the server and its answers back into
Ollama's), and embeds; `openai.OpenAI(base_url=ROUTER_URL + "/v1")` chats,
streamed and not, and embeds (passed through as they are). With --node NAME,
the answers must name NAME in the router's x-llm-router-node header.

It prints one line per check (`ok chat`, `FAIL chat: ...`), runs them all, and
exits 1 when any failed; 2 bad arguments; 3 the Python packages are missing
(install them with `python3 -m pip install -r tests/python/requirements.txt
-r tests/python/llama-requirements.txt`).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import traceback
from typing import Any, Callable

from checks import CheckFailed, report, check, same_model, short

REQUIREMENTS_HINT = (
    "run `python3 -m pip install -r tests/python/requirements.txt "
    "-r tests/python/llama-requirements.txt` (from the workspace root)"
)

try:
    import httpx
    import ollama
    import openai
except ImportError as missing:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        f"llama_server_test.py: the Python package {missing.name!r} is not installed "
        f"for {sys.executable}: {REQUIREMENTS_HINT}\n"
    )
    sys.exit(3)

PROMPT = "Why is the sky blue?"
EMBED_TEXTS = ["The sky is blue because of Rayleigh scattering.", "Grass is green."]
TIMEOUT_S = 120.0
# The tiny model's width (tests/python/make_tiny_gguf.py).
EMBEDDING_DIM = 64
# Tokens asked for. The model all but never samples its end token (its logit
# is 0 where the others spread about 8 either side), so answers run to this.
TOKENS = 8
SEED = 7


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base = args.router_url.rstrip("/")
        self.model: str = args.model
        self.embed_model: str = args.embed_model
        self.node: str | None = args.node
        self.ollama = ollama.Client(host=self.base, timeout=TIMEOUT_S)
        self.openai = openai.OpenAI(
            base_url=self.base + "/v1", api_key="unused", timeout=TIMEOUT_S, max_retries=0
        )
        self.http = httpx.Client(base_url=self.base, timeout=TIMEOUT_S)
        self.passed: list[str] = []
        self.failed: list[str] = []

    def run(self, name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except CheckFailed as e:
            self.failed.append(name)
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001 - every error is a failed check
            self.failed.append(name)
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()
            print(f"FAIL {name}: {detail}", flush=True)
            response = getattr(e, "response", None)
            if response is not None:
                print(
                    f"     response: HTTP {response.status_code} {short(response.text)}",
                    flush=True,
                )
        else:
            self.passed.append(name)
            print(f"ok {name}", flush=True)

    # ----- shared assertions ---------------------------------------------

    def check_served_by(self, what: str, headers: Any) -> None:
        if self.node is None:
            return
        node = headers.get("x-llm-router-node")
        check(node == self.node, f"{what}: served by {node!r}, expected {self.node!r}")

    def check_text(self, what: str, text: Any) -> None:
        check(isinstance(text, str), f"{what}: text is {short(text)}, not a string")
        check(text, f"{what}: empty text")

    def check_counters(self, what: str, r: Any, streamed: bool = False) -> None:
        """An Ollama answer's last object: done, a reason, and its counters.

        llama-cpp-python's server sends no usage in a stream (it ignores
        `stream_options.include_usage`, which the router asks for), so at the
        end of a streamed answer the router knows no prompt token count: it
        leaves prompt_eval_count out rather than make one up, and counts the
        streamed pieces of text for eval_count. Where a count is given it must
        be a real one.
        """
        check(r.done is True, f"{what}: done is {r.done!r}")
        check(r.done_reason in ("stop", "length"), f"{what}: done_reason is {r.done_reason!r}")
        counters = ["total_duration", "eval_count"]
        if not streamed or r.prompt_eval_count is not None:
            counters.append("prompt_eval_count")
        for field in counters:
            value = getattr(r, field)
            check(
                isinstance(value, int) and value > 0,
                f"{what}: {field} is {value!r}, expected a positive count; "
                f"the last object: {short(r.model_dump(exclude_none=True), 600)}",
            )
        check(
            r.eval_count <= TOKENS,
            f"{what}: eval_count is {r.eval_count}, more than the {TOKENS} asked for",
        )

    def check_stream(self, what: str, chunks: list[Any]) -> None:
        check(len(chunks) > 1, f"{what}: {len(chunks)} chunk(s), expected more than 1")
        for i, c in enumerate(chunks[:-1]):
            check(c.done is False, f"{what}: chunk {i} of {len(chunks)} has done={c.done!r}")
            check(same_model(c.model, self.model), f"{what}: chunk {i} model is {c.model!r}")
        # What the router made of the server's stream, for the log.
        print(f"     {what}, last object: {short(chunks[-1].model_dump(exclude_none=True), 600)}")
        self.check_counters(what, chunks[-1], streamed=True)

    def check_vector(self, what: str, vector: Any) -> None:
        check(isinstance(vector, list), f"{what}: embedding is {short(vector)}, not a list")
        check(
            len(vector) == EMBEDDING_DIM,
            f"{what}: {len(vector)} values, expected {EMBEDDING_DIM}",
        )
        check(
            all(isinstance(v, float) and math.isfinite(v) for v in vector),
            f"{what}: not all finite floats: {short(vector)}",
        )
        check(any(v != 0.0 for v in vector), f"{what}: all zeros")

    def check_usage(self, what: str, usage: Any) -> None:
        check(usage is not None, f"{what}: no usage")
        check(
            isinstance(usage.prompt_tokens, int) and usage.prompt_tokens > 0,
            f"{what}: prompt_tokens is {usage.prompt_tokens!r}",
        )
        check(
            isinstance(usage.completion_tokens, int) and 0 < usage.completion_tokens <= TOKENS,
            f"{what}: completion_tokens is {usage.completion_tokens!r}",
        )
        check(
            usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
            f"{what}: total_tokens {usage.total_tokens} != "
            f"{usage.prompt_tokens} + {usage.completion_tokens}",
        )

    # ----- ollama, translated to /v1 by the router ------------------------

    def options(self) -> dict[str, Any]:
        return {"num_predict": TOKENS, "seed": SEED}

    def ollama_chat(self) -> None:
        r = self.ollama.chat(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=False,
            options=self.options(),
        )
        check(isinstance(r, ollama.ChatResponse), f"answer is {type(r).__name__}")
        check(same_model(r.model, self.model), f"model is {r.model!r}")
        check(r.message.role == "assistant", f"role is {r.message.role!r}")
        self.check_text("chat", r.message.content)
        self.check_counters("chat", r)

    def ollama_chat_stream(self) -> None:
        chunks = list(
            self.ollama.chat(
                model=self.model,
                messages=[
                    {"role": "system", "content": "You answer briefly."},
                    {"role": "user", "content": PROMPT},
                ],
                stream=True,
                options=self.options(),
            )
        )
        self.check_stream("chat stream", chunks)
        for c in chunks:
            check(c.message.role == "assistant", f"chunk role is {c.message.role!r}")
        self.check_text("chat stream", "".join(c.message.content or "" for c in chunks))

    def ollama_generate(self) -> None:
        r = self.ollama.generate(
            model=self.model, prompt=PROMPT, stream=False, options=self.options()
        )
        check(isinstance(r, ollama.GenerateResponse), f"answer is {type(r).__name__}")
        check(same_model(r.model, self.model), f"model is {r.model!r}")
        self.check_text("generate", r.response)
        self.check_counters("generate", r)

    def ollama_generate_stream(self) -> None:
        chunks = list(
            self.ollama.generate(
                model=self.model, prompt=PROMPT, stream=True, options=self.options()
            )
        )
        self.check_stream("generate stream", chunks)
        self.check_text("generate stream", "".join(c.response or "" for c in chunks))

    def ollama_generate_with_system(self) -> None:
        # A system prompt sends /api/generate to /v1/chat/completions.
        r = self.ollama.generate(
            model=self.model,
            prompt=PROMPT,
            system="You answer briefly.",
            stream=False,
            options=self.options(),
        )
        self.check_text("generate with system", r.response)
        self.check_counters("generate with system", r)

    def ollama_embed(self) -> None:
        r = self.ollama.embed(model=self.embed_model, input=EMBED_TEXTS)
        check(isinstance(r, ollama.EmbedResponse), f"answer is {type(r).__name__}")
        check(same_model(r.model, self.embed_model), f"model is {r.model!r}")
        check(
            len(r.embeddings) == len(EMBED_TEXTS),
            f"{len(r.embeddings)} embeddings for {len(EMBED_TEXTS)} inputs",
        )
        for i, vector in enumerate(r.embeddings):
            self.check_vector(f"embed[{i}]", list(vector))
        check(r.embeddings[0] != r.embeddings[1], "two different texts gave the same embedding")
        one = self.ollama.embed(model=self.embed_model, input=EMBED_TEXTS[0])
        check(len(one.embeddings) == 1, f"{len(one.embeddings)} embeddings for one string")
        self.check_vector("embed (one string)", list(one.embeddings[0]))
        check(
            all(abs(a - b) < 1e-4 for a, b in zip(one.embeddings[0], r.embeddings[0])),
            "the same text embedded alone and in a list gave different vectors",
        )

    def ollama_list(self) -> None:
        names = [m.model for m in self.ollama.list().models]
        for wanted in (self.model, self.embed_model):
            check(
                any(same_model(n, wanted) for n in names),
                f"{wanted} is not among the listed models {names}",
            )

    # ----- openai, passed through ----------------------------------------

    def openai_chat(self) -> None:
        raw = self.openai.chat.completions.with_raw_response.create(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=TOKENS,
            seed=SEED,
        )
        self.check_served_by("chat.completions", raw.headers)
        r = raw.parse()
        check(r.object == "chat.completion", f"object is {r.object!r}")
        check(r.id, "no id")
        check(len(r.choices) == 1, f"{len(r.choices)} choices")
        choice = r.choices[0]
        check(choice.message.role == "assistant", f"role is {choice.message.role!r}")
        check(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason!r}")
        self.check_text("chat.completions", choice.message.content)
        self.check_usage("chat.completions", r.usage)

    def openai_chat_stream(self) -> None:
        with self.openai.chat.completions.with_streaming_response.create(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=TOKENS,
            seed=SEED,
            stream=True,
        ) as raw:
            self.check_served_by("chat.completions stream", raw.headers)
            chunks = list(raw.parse())
        check(len(chunks) > 1, f"{len(chunks)} chunk(s), expected more than 1")
        ids = {c.id for c in chunks}
        check(len(ids) == 1, f"chunks carry several ids: {ids}")
        for c in chunks:
            check(c.object == "chat.completion.chunk", f"chunk object is {c.object!r}")
        with_choices = [c for c in chunks if c.choices]
        finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
        check(
            finishes in (["stop"], ["length"]),
            f"finish_reason should come once, at the end: {finishes}",
        )
        check(
            with_choices[-1].choices[0].finish_reason,
            "the last chunk with choices has no finish_reason",
        )
        self.check_text(
            "chat.completions stream",
            "".join(c.choices[0].delta.content or "" for c in with_choices),
        )

    def openai_embeddings(self) -> None:
        raw = self.openai.embeddings.with_raw_response.create(
            model=self.embed_model, input=EMBED_TEXTS, encoding_format="float"
        )
        self.check_served_by("embeddings", raw.headers)
        r = raw.parse()
        check(r.object == "list", f"object is {r.object!r}")
        check(len(r.data) == len(EMBED_TEXTS), f"{len(r.data)} embeddings for {len(EMBED_TEXTS)}")
        for i, item in enumerate(r.data):
            check(item.index == i, f"data[{i}].index is {item.index!r}")
            self.check_vector(f"data[{i}]", item.embedding)
        check(r.data[0].embedding != r.data[1].embedding, "two texts gave the same embedding")

    def run_all(self) -> int:
        checks: list[tuple[str, Callable[[], None]]] = [
            ("list", self.ollama_list),
            ("chat", self.ollama_chat),
            ("chat stream", self.ollama_chat_stream),
            ("generate", self.ollama_generate),
            ("generate stream", self.ollama_generate_stream),
            ("generate with system", self.ollama_generate_with_system),
            ("embed", self.ollama_embed),
            ("openai chat.completions", self.openai_chat),
            ("openai chat.completions stream", self.openai_chat_stream),
            ("openai embeddings", self.openai_embeddings),
        ]
        for name, body in checks:
            self.run(name, body)
        return report("llama_server_test", self.failed, len(checks), self.base)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Check the router in front of a llama.cpp server with the official clients."
    )
    parser.add_argument("router_url", help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--model", default="tiny", help="the chat model (default: tiny)")
    parser.add_argument(
        "--embed-model", default="tiny-embed", help="the embedding model (default: tiny-embed)"
    )
    parser.add_argument(
        "--node", help="the node's name: the router must name it as the one that answered"
    )
    args = parser.parse_args()
    if not re.match(r"^https?://", args.router_url):
        parser.error(f"ROUTER_URL must start with http:// or https://, got {args.router_url!r}")
    print(
        f"llama_server_test: ollama {package_version('ollama')}, openai {openai.__version__}, "
        f"model {args.model}, embed model {args.embed_model}",
        flush=True,
    )
    return Suite(args).run_all()


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
