#!/usr/bin/env python3
"""Acceptance test: the official Python clients against an Ollama endpoint.

Usage:
    python3 tests/python/clients_test.py BASE_URL [MODEL] [options]

BASE_URL is the router (or any Ollama server), e.g. http://127.0.0.1:8080;
MODEL defaults to llama3.2. The script drives `ollama.Client(host=BASE_URL)`
and `openai.OpenAI(base_url=BASE_URL + "/v1")` through every endpoint the
router proxies, streamed and not, and checks that the answers come back
intact and well formed. It prints one line per check (`ok chat stream`,
`FAIL chat stream: ...`), runs them all, and exits 1 when any failed.

Exit codes: 0 all passed, 1 some check failed, 2 bad arguments, 3 the Python
packages are missing (install them with
`python3 -m pip install -r tests/python/requirements.txt`).

--mock additionally checks the exact text of llm-router's mock node
("<node name> token1 token2 ...", as many tokens as asked) and its counters,
so that a stream that lost, repeated or reordered a chunk is caught.

--api-key KEY is for a router that requires client API keys: every client
sends KEY (`ollama.Client(headers={"Authorization": "Bearer KEY"})`,
`openai.OpenAI(api_key=KEY)`), and the same clients without it, or with a
wrong one, must be refused with 401. --key-name NAME (KEY's name) adds the
checks that need the management API open to this script: the request history
names the key, and once it is revoked (`DELETE /api/keys/NAME`, the last
check) the very next request with it is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import traceback
import urllib.parse
from typing import Any, Callable

from checks import CheckFailed, report, canonical, check, same_model, short

REQUIREMENTS_HINT = (
    "run `python3 -m pip install -r tests/python/requirements.txt` "
    "(from the workspace root)"
)

try:
    import httpx
    import ollama
    import openai
except ImportError as missing:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        f"clients_test.py: the Python package {missing.name!r} is not installed "
        f"for {sys.executable}: {REQUIREMENTS_HINT}\n"
    )
    sys.exit(3)

PROMPT = "Why is the sky blue?"
EMBED_TEXTS = ["The sky is blue because of Rayleigh scattering.", "Grass is green."]
UNKNOWN_MODEL = "no-such-model-llm-router-test"
TIMEOUT_S = 60.0
# The history is written behind the answers, a batch at a time.
HISTORY_WAIT_S = 10.0


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base = args.base_url.rstrip("/")
        self.model: str = args.model
        self.embed_model: str = args.embed_model or args.model
        self.tokens: int = args.tokens
        self.mock: bool = args.mock
        self.embedding_dim: int | None = args.embedding_dim
        self.api_key: str | None = args.api_key
        self.key_name: str | None = args.key_name
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.ollama = ollama.Client(host=self.base, timeout=TIMEOUT_S, headers=auth)
        # Without a key the OpenAI client still sends one: a placeholder.
        self.openai = self.openai_client(self.api_key or "unused")
        self.http = httpx.Client(base_url=self.base, timeout=TIMEOUT_S, headers=auth)
        # The management API takes operator credentials, never a client's key.
        self.management = httpx.Client(base_url=self.base, timeout=TIMEOUT_S)
        self.passed: list[str] = []
        self.failed: list[str] = []

    def openai_client(self, api_key: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base + "/v1",
            api_key=api_key,
            timeout=TIMEOUT_S,
            max_retries=0,
        )

    # ----- running -------------------------------------------------------

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
            if hasattr(e, "response") and getattr(e, "response", None) is not None:
                response = e.response
                print(
                    f"     response: HTTP {response.status_code} "
                    f"{short(response.text)}",
                    flush=True,
                )
        else:
            self.passed.append(name)
            print(f"ok {name}", flush=True)

    # ----- shared assertions ---------------------------------------------

    def check_text(self, what: str, text: Any, tokens: int | None = None) -> None:
        check(isinstance(text, str), f"{what}: text is {short(text)}, not a string")
        check(text.strip(), f"{what}: empty text")
        if self.mock:
            expected = tokens if tokens is not None else self.tokens
            words = text.split(" ")
            check(
                len(words) == expected
                and re.fullmatch(r"\S+", words[0])
                and words[1:] == [f"token{i}" for i in range(1, expected)],
                f"{what}: expected the mock's '<node> token1 ... token{expected - 1}' "
                f"({expected} words), got {short(text)}",
            )

    def check_vector(self, what: str, vector: Any, dim: int | None) -> int:
        check(isinstance(vector, list), f"{what}: embedding is {short(vector)}, not a list")
        check(vector, f"{what}: empty embedding")
        check(
            all(isinstance(v, float) for v in vector),
            f"{what}: embedding holds non-floats: "
            f"{short([v for v in vector if not isinstance(v, float)][:5])}",
        )
        check(all(math.isfinite(v) for v in vector), f"{what}: embedding holds NaN or inf")
        check(any(v != 0.0 for v in vector), f"{what}: embedding is all zeros")
        if dim is not None:
            check(len(vector) == dim, f"{what}: embedding has {len(vector)} values, expected {dim}")
        return len(vector)

    def expected_dim(self) -> int | None:
        """Embedding length: --embedding-dim, else what /api/show says, else unknown."""
        if self.embedding_dim is None:
            try:
                info = self.ollama.show(self.embed_model).modelinfo or {}
            except Exception:  # noqa: BLE001 - the `show` check reports it
                return None
            arch = info.get("general.architecture")
            length = info.get(f"{arch}.embedding_length")
            if length is None:
                length = next(
                    (v for k, v in info.items() if k.endswith(".embedding_length")), None
                )
            if isinstance(length, int) and length > 0:
                self.embedding_dim = length
        return self.embedding_dim

    # ----- ollama --------------------------------------------------------

    def ollama_root(self) -> None:
        response = self.http.get("/")
        check(response.status_code == 200, f"GET / answered HTTP {response.status_code}")
        check(
            response.text.strip() == "Ollama is running",
            f"GET / answered {short(response.text)}",
        )
        head = self.http.head("/")
        check(head.status_code == 200, f"HEAD / answered HTTP {head.status_code}")

    def ollama_version(self) -> None:
        # The ollama client has no version() call; go through its own transport.
        body = self.ollama._request_raw("GET", "/api/version").json()
        version = body.get("version")
        check(isinstance(version, str), f"version is {short(version)}, not a string")
        check(re.match(r"^\d+\.\d+", version), f"version {version!r} does not look like x.y.z")

    def ollama_chat(self) -> None:
        r = self.ollama.chat(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=False,
            options={"num_predict": self.tokens},
        )
        check(isinstance(r, ollama.ChatResponse), f"answer is {type(r).__name__}")
        check(same_model(r.model, self.model), f"model is {r.model!r}")
        check(r.done is True, f"done is {r.done!r}")
        check(r.done_reason in ("stop", "length"), f"done_reason is {r.done_reason!r}")
        check(r.message.role == "assistant", f"role is {r.message.role!r}")
        self.check_text("chat", r.message.content)
        self.check_counters("chat", r)

    def ollama_chat_stream(self) -> None:
        chunks = list(
            self.ollama.chat(
                model=self.model,
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                options={"num_predict": self.tokens},
            )
        )
        self.check_ollama_stream("chat stream", chunks)
        for c in chunks:
            check(c.message.role == "assistant", f"chunk role is {c.message.role!r}")
        self.check_text("chat stream", "".join(c.message.content or "" for c in chunks))

    def ollama_generate(self) -> None:
        r = self.ollama.generate(
            model=self.model, prompt=PROMPT, stream=False, options={"num_predict": self.tokens}
        )
        check(isinstance(r, ollama.GenerateResponse), f"answer is {type(r).__name__}")
        check(same_model(r.model, self.model), f"model is {r.model!r}")
        check(r.done is True, f"done is {r.done!r}")
        check(r.done_reason in ("stop", "length"), f"done_reason is {r.done_reason!r}")
        self.check_text("generate", r.response)
        self.check_counters("generate", r)

    def ollama_generate_stream(self) -> None:
        chunks = list(
            self.ollama.generate(
                model=self.model, prompt=PROMPT, stream=True, options={"num_predict": self.tokens}
            )
        )
        self.check_ollama_stream("generate stream", chunks)
        self.check_text("generate stream", "".join(c.response or "" for c in chunks))

    def check_ollama_stream(self, what: str, chunks: list[Any]) -> None:
        check(len(chunks) > 1, f"{what}: {len(chunks)} chunk(s), expected more than 1")
        for i, c in enumerate(chunks[:-1]):
            check(c.done is False, f"{what}: chunk {i} of {len(chunks)} has done={c.done!r}")
            check(same_model(c.model, self.model), f"{what}: chunk {i} model is {c.model!r}")
        last = chunks[-1]
        check(last.done is True, f"{what}: last chunk has done={last.done!r}")
        check(
            last.done_reason in ("stop", "length"),
            f"{what}: last chunk has done_reason={last.done_reason!r}",
        )
        self.check_counters(what, last)

    def check_counters(self, what: str, r: Any) -> None:
        for field in ("total_duration", "eval_count", "eval_duration", "prompt_eval_count"):
            value = getattr(r, field)
            check(
                isinstance(value, int) and value >= 0,
                f"{what}: {field} is {value!r}, expected a count",
            )
        check(r.eval_count > 0, f"{what}: eval_count is 0")
        if self.mock:
            check(
                r.eval_count == self.tokens,
                f"{what}: eval_count is {r.eval_count}, asked for {self.tokens} tokens",
            )

    def ollama_embed(self) -> None:
        dim = self.expected_dim()
        r = self.ollama.embed(model=self.embed_model, input=EMBED_TEXTS)
        check(isinstance(r, ollama.EmbedResponse), f"answer is {type(r).__name__}")
        check(
            len(r.embeddings) == len(EMBED_TEXTS),
            f"{len(r.embeddings)} embeddings for {len(EMBED_TEXTS)} inputs",
        )
        for i, vector in enumerate(r.embeddings):
            dim = self.check_vector(f"embed[{i}]", list(vector), dim)
        check(r.embeddings[0] != r.embeddings[1], "two different texts gave the same embedding")
        one = self.ollama.embed(model=self.embed_model, input=EMBED_TEXTS[0])
        check(len(one.embeddings) == 1, f"{len(one.embeddings)} embeddings for one string")
        self.check_vector("embed (one string)", list(one.embeddings[0]), dim)

    def ollama_embeddings(self) -> None:
        r = self.ollama.embeddings(model=self.embed_model, prompt=EMBED_TEXTS[0])
        check(isinstance(r, ollama.EmbeddingsResponse), f"answer is {type(r).__name__}")
        self.check_vector("embeddings", list(r.embedding), self.expected_dim())

    def ollama_list(self) -> None:
        models = self.ollama.list().models
        check(models, "no models listed")
        for m in models:
            check(m.model, f"a listed model has no name: {short(m)}")
            check(isinstance(m.size, int) and m.size > 0, f"{m.model}: size is {m.size!r}")
        names = [m.model for m in models]
        for wanted in {self.model, self.embed_model}:
            check(
                any(same_model(n, wanted) for n in names),
                f"{wanted} is not among the listed models {names}",
            )
        check(
            len({canonical(n) for n in names}) == len(names),
            f"a model is listed twice: {names}",
        )

    def ollama_ps(self) -> None:
        # Generate first: an embedding model used meanwhile may have evicted
        # MODEL from a node that keeps one model in memory.
        self.ollama.generate(model=self.model, prompt=PROMPT, options={"num_predict": 2})
        models = self.ollama.ps().models
        for m in models:
            check(m.model, f"a running model has no name: {short(m)}")
            check(m.expires_at is not None, f"{m.model}: no expires_at")
        names = [m.model for m in models]
        check(
            any(same_model(n, self.model) for n in names),
            f"{self.model} is not among the running models {names} after generating with it",
        )

    def ollama_show(self) -> None:
        r = self.ollama.show(self.model)
        check(isinstance(r, ollama.ShowResponse), f"answer is {type(r).__name__}")
        check(r.details is not None and r.details.family, f"details are {short(r.details)}")
        check(isinstance(r.modelinfo, dict) and r.modelinfo, f"model_info is {short(r.modelinfo)}")
        check(r.capabilities, f"capabilities are {r.capabilities!r}")
        check(
            "completion" in r.capabilities,
            f"{self.model} cannot complete: capabilities {r.capabilities!r}",
        )

    def ollama_unknown_model(self) -> None:
        try:
            self.ollama.chat(
                model=UNKNOWN_MODEL, messages=[{"role": "user", "content": PROMPT}], stream=False
            )
        except ollama.ResponseError as e:
            check(e.status_code == 404, f"HTTP {e.status_code}, expected 404: {e.error!r}")
            # The client unwraps {"error": "..."}; anything else stays raw text.
            check(
                isinstance(e.error, str) and e.error and not e.error.lstrip().startswith("{"),
                f"error is not Ollama's {{\"error\": \"...\"}}: {short(e.error)}",
            )
        else:
            raise CheckFailed(f"a chat with {UNKNOWN_MODEL!r} succeeded")

    # ----- openai --------------------------------------------------------

    def openai_chat(self) -> None:
        r = self.openai.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=self.tokens,
        )
        check(r.object == "chat.completion", f"object is {r.object!r}")
        check(r.id, "no id")
        check(same_model(r.model, self.model), f"model is {r.model!r}")
        check(len(r.choices) == 1, f"{len(r.choices)} choices")
        choice = r.choices[0]
        check(choice.message.role == "assistant", f"role is {choice.message.role!r}")
        check(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason!r}")
        self.check_text("chat.completions", choice.message.content)
        self.check_usage("chat.completions", r.usage)

    def openai_chat_stream(self) -> None:
        stream = self.openai.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=self.tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
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
        usage = [c.usage for c in chunks if c.usage is not None]
        check(usage, "no usage chunk although stream_options.include_usage was set")
        self.check_usage("chat.completions stream", usage[-1])

    def openai_completions(self) -> None:
        r = self.openai.completions.create(model=self.model, prompt=PROMPT, max_tokens=self.tokens)
        check(r.object == "text_completion", f"object is {r.object!r}")
        check(same_model(r.model, self.model), f"model is {r.model!r}")
        check(len(r.choices) == 1, f"{len(r.choices)} choices")
        choice = r.choices[0]
        check(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason!r}")
        self.check_text("completions", choice.text)
        self.check_usage("completions", r.usage)

    def openai_completions_stream(self) -> None:
        chunks = list(
            self.openai.completions.create(
                model=self.model, prompt=PROMPT, max_tokens=self.tokens, stream=True
            )
        )
        check(len(chunks) > 1, f"{len(chunks)} chunk(s), expected more than 1")
        for c in chunks:
            check(c.object == "text_completion", f"chunk object is {c.object!r}")
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
        self.check_text("completions stream", "".join(c.choices[0].text for c in with_choices))

    def check_usage(self, what: str, usage: Any) -> None:
        check(usage is not None, f"{what}: no usage")
        check(
            isinstance(usage.completion_tokens, int) and usage.completion_tokens > 0,
            f"{what}: completion_tokens is {usage.completion_tokens!r}",
        )
        check(
            usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
            f"{what}: total_tokens {usage.total_tokens} != "
            f"{usage.prompt_tokens} + {usage.completion_tokens}",
        )
        if self.mock:
            check(
                usage.completion_tokens == self.tokens,
                f"{what}: completion_tokens {usage.completion_tokens}, asked for {self.tokens}",
            )

    def openai_embeddings(self) -> None:
        dim = self.expected_dim()
        r = self.openai.embeddings.create(
            model=self.embed_model, input=EMBED_TEXTS, encoding_format="float"
        )
        check(r.object == "list", f"object is {r.object!r}")
        check(len(r.data) == len(EMBED_TEXTS), f"{len(r.data)} embeddings for {len(EMBED_TEXTS)}")
        for i, item in enumerate(r.data):
            check(item.object == "embedding", f"data[{i}].object is {item.object!r}")
            check(item.index == i, f"data[{i}].index is {item.index!r}")
            dim = self.check_vector(f"data[{i}]", item.embedding, dim)
        check(r.data[0].embedding != r.data[1].embedding, "two texts gave the same embedding")
        one = self.openai.embeddings.create(model=self.embed_model, input=EMBED_TEXTS[0])
        check(len(one.data) == 1, f"{len(one.data)} embeddings for one string")
        self.check_vector("one string", one.data[0].embedding, dim)

    def openai_models(self) -> None:
        page = self.openai.models.list()
        models = list(page)
        check(models, "no models listed")
        for m in models:
            check(m.object == "model", f"{m.id}: object is {m.object!r}")
            check(isinstance(m.owned_by, str), f"{m.id}: owned_by is {m.owned_by!r}")
            check(isinstance(m.created, int), f"{m.id}: created is {m.created!r}")
        ids = [m.id for m in models]
        for wanted in {self.model, self.embed_model}:
            check(any(same_model(i, wanted) for i in ids), f"{wanted} is not among {ids}")
        check(len({canonical(i) for i in ids}) == len(ids), f"a model is listed twice: {ids}")

    def openai_model_retrieve(self) -> None:
        m = self.openai.models.retrieve(self.model)
        check(m.object == "model", f"object is {m.object!r}")
        check(same_model(m.id, self.model), f"id is {m.id!r}")

    def openai_unknown_model(self) -> None:
        try:
            self.openai.chat.completions.create(
                model=UNKNOWN_MODEL, messages=[{"role": "user", "content": PROMPT}]
            )
        except openai.NotFoundError as e:
            # The client unwraps {"error": {...}} into e.body.
            check(
                isinstance(e.body, dict) and isinstance(e.body.get("message"), str),
                f"error is not OpenAI's {{\"error\": {{\"message\": ...}}}}: {short(e.body)}",
            )
        except openai.APIStatusError as e:
            raise CheckFailed(f"HTTP {e.status_code}, expected 404: {short(e.body)}") from e
        else:
            raise CheckFailed(f"a chat completion with {UNKNOWN_MODEL!r} succeeded")

    # ----- the wire, below the clients -----------------------------------

    def wire_ndjson(self) -> None:
        body = {
            "model": self.model,
            "prompt": PROMPT,
            "options": {"num_predict": self.tokens},
        }  # no "stream": Ollama streams by default
        with self.http.stream("POST", "/api/generate", json=body) as response:
            check(response.status_code == 200, f"HTTP {response.status_code}")
            kind = response.headers.get("content-type", "")
            check(kind.startswith("application/x-ndjson"), f"content-type is {kind!r}")
            lines = [line for line in response.iter_lines() if line.strip()]
        objects = [json.loads(line) for line in lines]
        check(len(objects) > 1, f"{len(objects)} line(s), expected a stream")
        check(objects[-1].get("done") is True, f"last line is {short(objects[-1])}")
        check(
            all(o.get("done") is False for o in objects[:-1]),
            "a line before the last has done != false",
        )

    def wire_sse(self) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": self.tokens,
            "stream": True,
        }
        with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
            check(response.status_code == 200, f"HTTP {response.status_code}")
            kind = response.headers.get("content-type", "")
            check(kind.startswith("text/event-stream"), f"content-type is {kind!r}")
            data = [
                line[len("data:") :].strip()
                for line in response.iter_lines()
                if line.startswith("data:")
            ]
        check(len(data) > 2, f"{len(data)} event(s), expected a stream")
        check(data[-1] == "[DONE]", f"the stream ends with {short(data[-1])}, not [DONE]")
        for event in data[:-1]:
            json.loads(event)

    # ----- API keys (--api-key, --key-name) ------------------------------

    def chat_once(self, client: ollama.Client) -> Any:
        return client.chat(
            model=self.model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=False,
            options={"num_predict": 2},
        )

    def openai_chat_once(self, client: openai.OpenAI) -> Any:
        return client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=2
        )

    @staticmethod
    def expect_ollama_refusal(what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except ollama.ResponseError as e:
            check(e.status_code == 401, f"{what}: HTTP {e.status_code}, expected 401: {e.error!r}")
            check(
                isinstance(e.error, str) and e.error and not e.error.lstrip().startswith("{"),
                f"{what}: error is not Ollama's {{\"error\": \"...\"}}: {short(e.error)}",
            )
        else:
            raise CheckFailed(f"{what} succeeded")

    @staticmethod
    def expect_openai_refusal(what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except openai.AuthenticationError as e:
            check(
                isinstance(e.body, dict) and e.body.get("code") == "invalid_api_key",
                f"{what}: error is not OpenAI's invalid_api_key: {short(e.body)}",
            )
            challenge = e.response.headers.get("www-authenticate", "")
            check(
                challenge.lower().startswith("bearer"),
                f"{what}: WWW-Authenticate is {challenge!r}, expected Bearer",
            )
        except openai.APIStatusError as e:
            raise CheckFailed(f"{what}: HTTP {e.status_code}, expected 401: {short(e.body)}") from e
        else:
            raise CheckFailed(f"{what} succeeded")

    def probes_need_no_key(self) -> None:
        for path in ("/", "/api/version"):
            response = self.management.get(path)
            check(
                response.status_code == 200,
                f"GET {path} without a key answered HTTP {response.status_code}",
            )

    def ollama_without_a_key_is_refused(self) -> None:
        anonymous = ollama.Client(host=self.base, timeout=TIMEOUT_S)
        messages = [{"role": "user", "content": PROMPT}]
        self.expect_ollama_refusal("chat", lambda: self.chat_once(anonymous))
        self.expect_ollama_refusal(
            "chat stream",
            lambda: list(anonymous.chat(model=self.model, messages=messages, stream=True)),
        )
        self.expect_ollama_refusal(
            "generate", lambda: anonymous.generate(model=self.model, prompt=PROMPT)
        )
        self.expect_ollama_refusal("list", anonymous.list)

    def openai_with_a_wrong_key_is_refused(self) -> None:
        wrong = self.openai_client("wrong")
        self.expect_openai_refusal("chat.completions", lambda: self.openai_chat_once(wrong))
        self.expect_openai_refusal(
            "chat.completions stream",
            lambda: list(
                wrong.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": PROMPT}],
                    stream=True,
                )
            ),
        )
        self.expect_openai_refusal("models.list", lambda: list(wrong.models.list()))

    def history_names_the_key(self) -> None:
        # Requests the checks above made with the key, as (endpoint, stream).
        wanted = {
            ("/api/chat", False),
            ("/api/chat", True),
            ("/api/generate", False),
            ("/api/generate", True),
            ("/v1/chat/completions", False),
            ("/v1/chat/completions", True),
        }
        deadline = time.monotonic() + HISTORY_WAIT_S
        while True:
            response = self.management.get(
                "/api/history", params={"key": self.key_name, "limit": 500}
            )
            check(
                response.status_code == 200,
                f"GET /api/history answered HTTP {response.status_code}: {short(response.text)}",
            )
            items = response.json()["items"]
            seen = {(i["endpoint"], i["stream"]) for i in items}
            if wanted <= seen or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check(
            wanted <= seen,
            f"after {HISTORY_WAIT_S} s the history of key {self.key_name!r} lacks "
            f"{sorted(wanted - seen)}; it has {sorted(seen)}",
        )
        for i in items:
            check(
                i.get("api_key") == self.key_name,
                f"history item {i['id']} ({i['endpoint']}) names the key {i.get('api_key')!r}",
            )

    def a_revoked_key_is_refused_at_once(self) -> None:
        name = urllib.parse.quote(self.key_name or "", safe="")
        response = self.management.delete(f"/api/keys/{name}")
        check(
            response.status_code == 204,
            f"DELETE /api/keys/{name} answered HTTP {response.status_code}: "
            f"{short(response.text)}",
        )
        self.expect_ollama_refusal("chat with the revoked key", lambda: self.chat_once(self.ollama))
        self.expect_ollama_refusal("list with the revoked key", self.ollama.list)
        self.expect_openai_refusal(
            "chat.completions with the revoked key", lambda: self.openai_chat_once(self.openai)
        )

    # ----- all -----------------------------------------------------------

    def run_all(self) -> int:
        checks: list[tuple[str, Callable[[], None]]] = [
            ("root", self.ollama_root),
            ("version", self.ollama_version),
            ("chat", self.ollama_chat),
            ("chat stream", self.ollama_chat_stream),
            ("generate", self.ollama_generate),
            ("generate stream", self.ollama_generate_stream),
            ("embed", self.ollama_embed),
            ("embeddings", self.ollama_embeddings),
            ("list", self.ollama_list),
            ("ps", self.ollama_ps),
            ("show", self.ollama_show),
            ("ollama unknown model", self.ollama_unknown_model),
            ("openai chat.completions", self.openai_chat),
            ("openai chat.completions stream", self.openai_chat_stream),
            ("openai completions", self.openai_completions),
            ("openai completions stream", self.openai_completions_stream),
            ("openai embeddings", self.openai_embeddings),
            ("openai models.list", self.openai_models),
            ("openai models.retrieve", self.openai_model_retrieve),
            ("openai unknown model", self.openai_unknown_model),
            ("wire ollama ndjson", self.wire_ndjson),
            ("wire openai sse", self.wire_sse),
        ]
        if self.api_key:
            checks += [
                ("probes need no key", self.probes_need_no_key),
                ("ollama without a key is refused", self.ollama_without_a_key_is_refused),
                ("openai with a wrong key is refused", self.openai_with_a_wrong_key_is_refused),
            ]
        if self.key_name:
            checks += [
                ("history names the key", self.history_names_the_key),
                # Last: the key no longer works afterwards.
                ("a revoked key is refused at once", self.a_revoked_key_is_refused_at_once),
            ]
        for name, body in checks:
            self.run(name, body)
        return report("clients_test", self.failed, len(checks), self.base)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Check an Ollama/OpenAI endpoint with the official Python clients."
    )
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8080")
    parser.add_argument("model", nargs="?", default="llama3.2", help="default: llama3.2")
    parser.add_argument(
        "--embed-model", help="model for the embedding checks (default: MODEL)"
    )
    parser.add_argument(
        "--tokens", type=int, default=8, help="tokens to ask for (num_predict, max_tokens)"
    )
    parser.add_argument(
        "--embedding-dim",
        type=int,
        help="expected embedding length (default: the embed model's "
        "<arch>.embedding_length from /api/show)",
    )
    parser.add_argument(
        "--mock",
        action="store_true",
        help="the endpoint serves llm-router mock nodes: check their exact text",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help="the endpoint requires client API keys: send KEY, and check that "
        "requests without it or with a wrong one are refused",
    )
    parser.add_argument(
        "--key-name",
        metavar="NAME",
        help="the name of KEY: check that the history names it, then "
        "revoke it and check that it is refused at once (needs the management API)",
    )
    args = parser.parse_args()
    if not re.match(r"^https?://", args.base_url):
        parser.error(f"BASE_URL must start with http:// or https://, got {args.base_url!r}")
    if args.tokens < 2:
        parser.error("--tokens must be at least 2 (a stream needs more than one chunk)")
    if args.key_name and not args.api_key:
        parser.error("--key-name needs --api-key")
    print(
        f"clients_test: ollama {ollama_version()}, openai {openai.__version__}, "
        f"model {args.model}, embed model {args.embed_model or args.model}",
        flush=True,
    )
    return Suite(args).run_all()


def ollama_version() -> str:
    try:
        from importlib.metadata import version

        return version("ollama")
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
