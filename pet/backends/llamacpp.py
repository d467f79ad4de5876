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


def gguf_template(llm, override: str | None = None) -> templates.ChatTemplate:
    """The one choice of chat template for a GGUF model (serving here, and the engine's vocabulary-only view):
    the tier's override, else what the file's metadata says."""
    def token_text(tid: int) -> str:
        return "" if tid < 0 else llm.detokenize([tid], special=True).decode("utf-8", errors="ignore")

    md = llm.metadata
    return templates.choose(override, md.get("tokenizer.chat_template"), md.get("general.architecture"),
                            bos_token=token_text(llm.token_bos()), eos_token=token_text(llm.token_eos()))


class SharedModel:
    """One llama.cpp model and context that several tiers use (base and enhanced: one GGUF, with and
    without the LoRA), so they cost one model's memory. llama.cpp applies LoRA adapters per context
    at compute time (llama_set_adapters_lora), so each request sets its tier's adapter, under the one
    lock that serialises the context anyway; switching drops the cached prompt, whose keys and values
    were computed under the other adapter."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int):
        self.model_path, self.n_ctx, self.n_threads = Path(model_path), n_ctx, n_threads
        self.llm = None
        self.lock = threading.Lock()
        self._adapters: dict[str, object] = {}
        self._active: str | None = None
        self._load_lock = threading.Lock()

    def load(self):
        with self._load_lock:
            if self.llm is None:
                Llama = _import_llama()
                try:
                    with native_quiet():
                        self.llm = Llama(str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                         verbose=False)
                except (ValueError, RuntimeError) as e:
                    raise BackendError(f"llama.cpp could not load {self.model_path.name}: {e}. A truncated or "
                                       "corrupt download fails this way: check the file (or reinstall its package) "
                                       "and try again")
        return self.llm

    def _adapter(self, path: str):
        if path not in self._adapters:
            import llama_cpp

            with native_quiet():  # a line per layer ("cannot use buft 'CPU_REPACK'") otherwise
                handle = llama_cpp.llama_adapter_lora_init(self.llm._model.model, path.encode("utf-8"))
            if not handle:
                raise BackendError(f"llama.cpp could not load the LoRA adapter {path}: is it a GGUF adapter "
                                   "for this model?")
            # Freed with the model, before it (the Llama object's exit stack runs last-in first-out),
            # as llama-cpp-python frees the adapter it loads itself.
            self.llm._stack.callback(llama_cpp.llama_adapter_lora_free, handle)
            self._adapters[path] = handle
        return self._adapters[path]

    def activate(self, lora_path: Path | None) -> None:
        """Make this request's adapter (or none) the context's; call with `lock` held."""
        import ctypes

        import llama_cpp

        want = str(lora_path) if lora_path else None
        if want == self._active:
            return
        if want is None:
            rc = llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapter(want))
            rc = llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc:
            raise BackendError(f"llama.cpp could not switch the LoRA adapter (error {rc})")
        self.llm.reset()  # the cached prompt was computed under the other adapter
        self._active = want


class LlamaCppBackend(Backend):
    name = "llamacpp"
    supports_grammar = True
    supports_prefix = True

    def __init__(self, model_path: Path, n_ctx: int = 2048, lora_path: Path | None = None,
                 template_override: str | None = None, n_threads: int | None = None,
                 shared: SharedModel | None = None):
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.lora_path = lora_path
        self.template_override = template_override
        # llama.cpp's threads spin while they wait for each other, so on a CPU shared with a training job
        # fewer threads decode faster, not slower: the engine sets the count per request (set_threads)
        # from the thread budget (PET_THREADS, PET_SERVE_THREADS).
        self.n_threads = n_threads or ThreadBudget.from_env().cores
        self.shared = shared
        self.llm = None
        self.template: templates.ChatTemplate | None = None
        # a llama.cpp context serves one request at a time; tiers sharing a model share its lock
        self._lock = shared.lock if shared else threading.Lock()

    def load(self) -> None:
        if self.llm is not None:
            return
        if self.shared is not None:
            self.llm = self.shared.load()
            if self.lora_path:
                with self._lock:
                    self.shared._adapter(str(self.lora_path))  # a bad adapter fails at load, not mid-chat
        else:
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
        self.template = gguf_template(self.llm, self.template_override)

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

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def prompt_tokens(self, messages: list[dict], prefix: str = "") -> list[int]:
        return self.tokenize(self.template.render(messages, add_generation_prompt=True) + prefix)

    def stream(self, messages: list[dict], params: GenParams, grammar: str | None = None,
               prefix: str = "") -> Iterator[Chunk]:
        """`grammar`: a GBNF grammar (llama.cpp's format) the answer must follow; the sampler masks every
        token that would leave it, so the answer always parses (if it is not cut at max tokens).
        `prefix`: the start of the answer, already written; the chunks are what comes after it."""
        self.load()
        # A conversation longer than the context is trimmed (oldest turns first) with a notice, keeping
        # room for an answer of max_new_tokens, up to a quarter of the context.
        n_ctx = min(self.n_ctx, params.n_ctx)  # a request may ask for a smaller window, not a bigger one
        limit = n_ctx - min(params.max_new_tokens, n_ctx // 4)
        messages, notice = fit_context(messages, lambda ms: len(self.prompt_tokens(ms)), limit)
        prompt = self.prompt_tokens(messages, prefix)
        room = n_ctx - len(prompt)  # at least min(max_new_tokens, n_ctx // 4) after fit_context
        yield from with_notice(self._generate(prompt, room, params, grammar), notice)

    def _generate(self, prompt: list[int], room: int, params: GenParams, grammar: str | None) -> Iterator[Chunk]:
        kw = dict(max_tokens=min(params.max_new_tokens, room), temperature=params.temperature,
                  top_p=params.top_p, top_k=params.top_k, repeat_penalty=params.repeat_penalty,
                  stop=list(self.template.stop) + list(params.stop), stream=True)
        if params.seed is not None:
            kw["seed"] = params.seed
        if grammar:
            from llama_cpp import LlamaGrammar

            kw["grammar"] = LlamaGrammar.from_string(grammar, verbose=False)
        with self._lock:
            if self.shared is not None:
                self.shared.activate(self.lora_path)
            if params.seed is not None:
                # A seed promises the same answer every time, but a prompt evaluated in one batch and one
                # resumed from the cache differ in the last bits (a LoRA makes it show), so a seeded
                # request evaluates its whole prompt afresh.
                self.llm.reset()
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
                yield clock.last(reason, len(prompt))
            finally:
                gen.close()

    def logprobs(self, messages: list[dict], answer: str) -> list[float]:
        """Log-probability of each token of `answer` (and its end-of-turn marker) as the reply to `messages`.

        One forward pass over prompt + answer, asking llama.cpp for logits only at the answer's positions:
        a context made with logits_all would keep n_ctx x vocabulary floats (2 GB for Gemma 3's 262k
        vocabulary). Raises BackendError when prompt + answer do not fit the context."""
        import numpy as np
        from llama_cpp import _internals

        self.load()
        full, spans = self.template.training_text(messages + [{"role": "assistant", "content": answer}])
        start, end = spans[-1]
        prompt, target = self.tokenize(full[:start]), self.tokenize(full[start:end])
        ids = prompt + target
        if len(ids) > self.n_ctx:
            raise BackendError(f"prompt + answer are {len(ids)} tokens but the context holds {self.n_ctx}")
        want = set(range(len(prompt) - 1, len(ids) - 1))  # position i predicts token i + 1
        n_batch = self.llm.n_batch
        out: list[float] = []
        with self._lock:
            if self.shared is not None:  # the model is shared: score with this tier's adapter, not the last one
                self.shared.activate(self.lora_path)
            batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
            try:
                self.llm.reset()
                self.llm._ctx.kv_cache_clear()
                for b0 in range(0, len(ids), n_batch):
                    chunk = ids[b0:b0 + n_batch]
                    b = batch.batch
                    b.n_tokens = len(chunk)
                    for j, tok in enumerate(chunk):
                        b.token[j], b.pos[j], b.n_seq_id[j] = tok, b0 + j, 1
                        b.seq_id[j][0] = 0
                        b.logits[j] = (b0 + j) in want
                    self.llm._ctx.decode(batch)
                    for j in range(len(chunk)):
                        if (b0 + j) in want:
                            row = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(j), shape=(self.llm.n_vocab(),))
                            row = row.astype(np.float64)
                            m = row.max()
                            lse = m + np.log(np.exp(row - m).sum())
                            out.append(float(row[ids[b0 + j + 1]] - lse))
            finally:
                # Generation must not reuse this pass's KV cache as a prompt prefix.
                self.llm._ctx.kv_cache_clear()
                self.llm.reset()
                batch.close()
        return out

    def describe(self) -> dict:
        return {"model_path": str(self.model_path), "adapter": str(self.lora_path) if self.lora_path else None,
                "template": self.template.name if self.template else None, "n_ctx": self.n_ctx,
                "shared_weights": self.shared is not None}
