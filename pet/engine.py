"""The one Engine object: settings, the tier registry and the store. Pages and the CLI call only this."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

from pet import PetError, decoding, language, templates
from pet.backends.base import Answer, BackendError, Chunk, collect, with_notice
from pet.config import OVERLAY_FILE, GenParams, Settings, load_tiers, merge_overlay
from pet.store import Store
from pet.tiers import Registry


class Engine:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        specs = merge_overlay(load_tiers(self.settings.tiers_path), self.settings.home / OVERLAY_FILE)
        self.tiers = Registry(specs, self.settings.path("models"), self.settings.path("cache", "hf"))
        self._vocabs: dict[str, tuple] = {}
        self._fewshot: tuple | None = None  # (dataset version, FewShotIndex)
        self._jobs_seen = (-1.0, 0)  # (monotonic time, running training jobs): looked up at most once a second

    def training_jobs(self) -> int:
        """How many training jobs run now (from the run folders, so a job started elsewhere counts too)."""
        import time

        from pet.train import jobs

        at, n = self._jobs_seen
        if time.monotonic() - at > 1.0:
            n = len(jobs.live_ids(self.settings.home))
            self._jobs_seen = (time.monotonic(), n)
        return n

    def serve_threads(self) -> int:
        """Threads a model gets for the next request: every core, or the serving share while a job trains."""
        return self.settings.threads.serving(self.training_jobs())

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.home / "pet.db")

    def tier_status(self, probe: bool = True) -> list[dict]:
        return [self.tiers.status(n, probe=probe) for n in self.tiers.names()]

    def params_for(self, tier: str, **overrides) -> GenParams:
        return self.tiers.spec(tier).params.with_overrides(**overrides)

    def stream(self, tier: str, messages: list[dict], params: GenParams | None = None,
               system: str | None = None, grammar: str | None = None) -> Iterator[Chunk]:
        """Stream a tier's answer. `system` None means the tier's own system prompt; "" means none.
        `grammar` (GBNF) constrains the answer where the backend supports it (see supports_grammar)."""
        spec = self.tiers.spec(tier)
        params = params or spec.params
        msgs = templates.with_system(messages, spec.system_prompt if system is None else system)
        backend = self.tiers.backend(tier)
        if grammar is not None:  # a constrained verdict (the judge): no demonstrations, no sampling tricks
            if not backend.supports_grammar:
                raise PetError(f"tier {tier!r} ({backend.name}) cannot constrain answers with a grammar")
            yield from backend.stream(msgs, params, grammar=grammar)
            return
        request = templates.last_user(messages)
        notice = self.language_notice(tier, request)
        if params.fewshot:
            msgs = self.with_fewshot(msgs, params)
        backend.set_threads(self.serve_threads())
        # The request goes in word for word only as the first turn's task, and not when it reads as a
        # negative line ("Don't ...") that drop_avoid would take out.
        echo = (getattr(backend, "supports_prefix", False) and sum(m.get("role") == "user" for m in messages) == 1
                and not decoding.negative_line(request))

        def one(p: GenParams) -> Iterator[Chunk]:
            if p.echo_request and echo:
                raw = decoding.echo_request(
                    lambda prefix, stop, n: backend.stream(msgs, p.with_overrides(stop=p.stop + stop, max_new_tokens=n),
                                                           prefix=prefix), request, p.max_new_tokens)
            else:
                raw = backend.stream(msgs, p)
            stream = with_notice(raw, notice)
            stream = decoding.guard_loops(stream) if p.loop_guard else stream
            return decoding.drop_avoid(stream) if p.drop_avoid else stream

        try:
            if params.best_of > 1:
                # Greedy decoding would give N identical candidates: sample, with a seed per candidate.
                temp, seed = params.temperature or 0.7, params.seed or 0
                yield from decoding.best_of(lambda i: one(params.with_overrides(temperature=temp, seed=seed + i)),
                                            params.best_of, templates.last_user(msgs))
            else:
                yield from one(params)
        except BackendError as e:
            if getattr(backend, "remote", False):  # a server that failed mid-answer: show the tier unavailable
                self.tiers.mark_failed(tier, str(e))
            raise

    def language_notice(self, tier: str, request: str) -> str:
        """A word for the user when the request is in a language the tier was not tuned on ("" otherwise)."""
        tuned = self.tiers.spec(tier).languages
        lang = language.guess(request) if tuned else None
        if lang is None or lang in tuned:
            return ""
        said = language.name(lang)
        out = (f"{tier} was tuned on {', '.join(language.name(c) for c in tuned)} requests; this one looks "
               f"{said}, so the answer may drift or repeat itself.")
        others = [n for n in self.tiers.names() if n != tier and lang in self.tiers.spec(n).languages]
        if others:
            out += f" Try {', '.join(others)}, tuned on {said} requests too."
        return out

    def with_fewshot(self, messages: list[dict], params: GenParams) -> list[dict]:
        """The conversation with the `params.fewshot` curated examples nearest its last request put
        in as earlier turns (from the latest dataset version's train split)."""
        from pet.datastore import DatasetStore

        version, examples = DatasetStore(self.store).current()
        if self._fewshot is None or self._fewshot[0] != version:
            from pet import dataset

            key = dataset.examples_sha256(examples)
            self._fewshot = (version, decoding.FewShotIndex(examples, key, self.settings.path("cache")))
        demos = self._fewshot[1].nearest(templates.last_user(messages), params.fewshot)
        # About 3 characters a token keeps non-English text inside the context too.
        budget = 3 * (params.n_ctx - params.max_new_tokens) - 200
        return decoding.with_demonstrations(messages, demos, budget)

    def supports_grammar(self, tier: str) -> bool:
        """Can this tier's answers be grammar-constrained? Decided from the tiers file; no model is loaded."""
        return self.tiers.spec(tier).backend == "llamacpp"

    def logprobs(self, tier: str, messages: list[dict], answer: str, system: str | None = None) -> list[float]:
        """Per-token log-probabilities of `answer` as the tier's reply (its system prompt unless `system`)."""
        spec = self.tiers.spec(tier)
        msgs = templates.with_system(messages, spec.system_prompt if system is None else system)
        return self.tiers.backend(tier).logprobs(msgs, answer)

    def template_for(self, tier: str) -> templates.ChatTemplate:
        """The chat template a tier is served (and trained) with, without loading its weights."""
        spec = self.tiers.spec(tier)
        if spec.template and spec.template != "auto":
            return templates.choose(spec.template, None, None)
        loaded = self.tiers.loaded(tier)
        if loaded is not None and getattr(loaded, "template", None) is not None:
            return loaded.template
        return self._vocab(tier)[1]

    def tokenizer_for(self, tier: str):
        """A function text -> token ids for the tier's model (vocabulary only; no weights loaded)."""
        return self._vocab(tier)[0]

    def _vocab(self, tier: str):
        if tier not in self._vocabs:
            from pet import models

            spec = self.tiers.spec(tier)
            if spec.backend in ("ollama", "openai"):
                raise PetError(f"tier {tier!r} runs on a model server ({spec.backend}): its tokenizer and "
                               "template live in the server")
            ref = models.resolve(spec.model, spec.backend, self.settings.path("models"))
            if ref.path is not None and ref.path.suffix == ".gguf":
                from llama_cpp import Llama

                from pet.backends.llamacpp import gguf_template, native_quiet

                with native_quiet():
                    llm = Llama(str(ref.path), vocab_only=True, verbose=False)
                tmpl = gguf_template(llm, spec.template)

                def tok(text: str, _llm=llm) -> list[int]:
                    return _llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            else:
                from transformers import AutoTokenizer

                t = AutoTokenizer.from_pretrained(models.hf_folder(ref, self.settings.path("cache", "hf")))
                tmpl = templates.choose(spec.template, t.chat_template, None, t.bos_token or "", t.eos_token or "")

                def tok(text: str, _t=t) -> list[int]:
                    return _t(text, add_special_tokens=False)["input_ids"]
            self._vocabs[tier] = (tok, tmpl)
        return self._vocabs[tier]

    def generate(self, tier: str, messages: list[dict], params: GenParams | None = None,
                 system: str | None = None) -> Answer:
        return collect(self.stream(tier, messages, params, system))
