"""llama.cpp backend (llama-cpp-python): GGUF files, optionally with a GGUF LoRA adapter.

The prompt is rendered with PET's template and sent as token ids to plain completion:
the Gemma 3 base GGUF carries no chat template, and one rendering path keeps training,
llama.cpp and Ollama in step.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pet import templates
from pet.backends.base import Backend, BackendError, Chunk, Clock, fit_context, with_notice
from pet.config import GenParams, ThreadBudget


@contextmanager
def native_quiet():
    """Silence llama.cpp's load-time notes, which it writes straight to fd 2 even with verbose=False.

    The CLI's stderr is for PET's own messages; PET_DEBUG=1 shows llama.cpp's too. A failed load
    still raises, and PET reports it."""
    if os.environ.get("PET_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_llama():
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise BackendError(f"llama-cpp-python is not installed ({e}): run `pip install llama-cpp-python`")
    return Llama


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(self, model_path: Path, n_ctx: int = 2048, lora_path: Path | None = None,
                 template_override: str | None = None, n_threads: int | None = None):
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.lora_path = lora_path
        self.template_override = template_override
        # llama.cpp's threads spin while they wait for each other, so on a CPU shared with a training job
        # fewer threads decode faster, not slower: the engine sets the count per request (set_threads)
        # from the thread budget (PET_THREADS, PET_SERVE_THREADS).
        self.n_threads = n_threads or ThreadBudget.from_env().cores
        self.llm = None
        self.template: templates.ChatTemplate | None = None
        self._lock = threading.Lock()  # a llama.cpp context serves one request at a time

    def load(self) -> None:
        if self.llm is not None:
            return
        Llama = _import_llama()
        kw = {"lora_path": str(self.lora_path)} if self.lora_path else {}
        try:
            with native_quiet():
                # n_threads_batch too: left unset, llama-cpp-python gives prompt processing every core.
                self.llm = Llama(str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                 n_threads_batch=self.n_threads, verbose=False, **kw)
        except (ValueError, RuntimeError) as e:
            raise BackendError(f"llama.cpp could not load {self.model_path.name}: {e}. A truncated or corrupt "
                               "download fails this way: check the file (or reinstall its package) and try again")
        md = self.llm.metadata
        self.template = templates.choose(
            self.template_override, md.get("tokenizer.chat_template"), md.get("general.architecture"),
            bos_token=self._token_text(self.llm.token_bos()), eos_token=self._token_text(self.llm.token_eos()))

    def set_threads(self, n: int) -> None:
        n = max(1, int(n))
        if n == self.n_threads:
            return
        with self._lock:  # never under a running generation
            self.n_threads = n
            if self.llm is not None:
                from llama_cpp import llama_set_n_threads

                llama_set_n_threads(self.llm.ctx, n, n)
                self.llm.n_threads = self.llm.n_threads_batch = n

    def _token_text(self, tid: int) -> str:
        if tid < 0:
            return ""
        return self.llm.detokenize([tid], special=True).decode("utf-8", errors="ignore")

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        return self.tokenize(self.template.render(messages, add_generation_prompt=True))

    def stream(self, messages: list[dict], params: GenParams) -> Iterator[Chunk]:
        self.load()
        # A conversation longer than the context is trimmed (oldest turns first) with a notice, keeping
        # room for an answer of max_new_tokens, up to a quarter of the context.
        limit = self.n_ctx - min(params.max_new_tokens, self.n_ctx // 4)
        messages, notice = fit_context(messages, lambda ms: len(self.prompt_tokens(ms)), limit)
        prompt = self.prompt_tokens(messages)
        room = self.n_ctx - len(prompt)
        yield from with_notice(self._generate(prompt, room, params), notice)

    def _generate(self, prompt: list[int], room: int, params: GenParams) -> Iterator[Chunk]:
        kw = dict(max_tokens=min(params.max_new_tokens, room), temperature=params.temperature,
                  top_p=params.top_p, top_k=params.top_k, repeat_penalty=params.repeat_penalty,
                  stop=list(self.template.stop), stream=True)
        if params.seed is not None:
            kw["seed"] = params.seed
        with self._lock:
            clock = Clock()
            gen = self.llm.create_completion(prompt, **kw)
            reason = "cancelled"
            try:
                for part in gen:
                    choice = part["choices"][0]
                    if choice["text"]:
                        yield clock.chunk(choice["text"])
                    if choice.get("finish_reason"):
                        reason = choice["finish_reason"]
                yield clock.last(reason)
            finally:
                gen.close()

    def describe(self) -> dict:
        return {"model_path": str(self.model_path), "adapter": str(self.lora_path) if self.lora_path else None,
                "template": self.template.name if self.template else None, "n_ctx": self.n_ctx}
