"""transformers (+ PEFT) backend: hub ids, local folders, or GGUF files via a dequantised cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

from pet import templates
from pet.backends.base import Backend, BackendError, Chunk, Clock, fit_context
from pet.config import GenParams


def _counting_streamer(tokenizer):
    """A TextIteratorStreamer that also counts the tokens generated so far (for the chunks' token counts)."""
    from transformers import TextIteratorStreamer

    class _Counting(TextIteratorStreamer):
        generated = 0

        def put(self, value):
            if not self.next_tokens_are_prompt:
                self.generated += value.numel()
            super().put(value)

    return _Counting(tokenizer, skip_prompt=True, skip_special_tokens=True)


class HFBackend(Backend):
    name = "hf"
    supports_prefix = True

    def __init__(self, location: str, adapter_path: str | None = None, template_override: str | None = None,
                 dtype: str = "float32"):
        self.location = location
        self.adapter_path = adapter_path
        self.template_override = template_override
        self.dtype = dtype
        self.model = None
        self.tokenizer = None
        self.template: templates.ChatTemplate | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        if self.model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise BackendError(f"transformers/torch are not installed ({e}): run `pip install -r requirements.txt`")
        try:
            tok = AutoTokenizer.from_pretrained(self.location)
            model = AutoModelForCausalLM.from_pretrained(self.location, dtype=getattr(torch, self.dtype))
        except OSError as e:
            raise BackendError(f"transformers could not load {self.location!r}: {str(e).splitlines()[0]} "
                               "(offline? a hub id needs internet the first time, or a local folder)")
        if self.adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter_path)
        model.eval()
        self.tokenizer, self.model = tok, model
        self.template = templates.choose(self.template_override, tok.chat_template,
                                         getattr(model.config, "model_type", None),
                                         bos_token=tok.bos_token or "", eos_token=tok.eos_token or "")

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def set_threads(self, n: int) -> None:
        if self.model is None:
            return  # torch may not even be imported yet; the next request sets it
        import torch

        with self._lock:  # torch's thread count is process-wide: change it between generations only
            if torch.get_num_threads() != max(1, int(n)):
                torch.set_num_threads(max(1, int(n)))

    def stream(self, messages: list[dict], params: GenParams, prefix: str = "") -> Iterator[Chunk]:
        """`prefix`: the start of the answer, already written; the chunks are what comes after it."""
        self.load()
        import torch

        def count(ms: list[dict]) -> int:
            return len(self.tokenize(self.template.render(ms, add_generation_prompt=True)))

        limit = params.n_ctx - min(params.max_new_tokens, params.n_ctx // 4)
        messages, notice = fit_context(messages, count, limit)
        ids = torch.tensor([self.tokenize(self.template.render(messages, add_generation_prompt=True) + prefix)])
        cancel = threading.Event()
        streamer = _counting_streamer(self.tokenizer)
        gen_kw = self._generate_kwargs(ids, params, streamer, cancel)
        out = {}

        def run():
            try:
                with torch.no_grad():
                    out["seq"] = self.model.generate(**gen_kw)
            except Exception as e:  # surfaced in the caller's thread below
                out["error"] = e
                streamer.end()

        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            clock = Clock()
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            try:
                for text in streamer:
                    if text:
                        yield replace(clock.chunk(text, streamer.generated - clock.tokens), notice=notice)
                worker.join()
                if "error" in out:
                    raise BackendError(f"generation failed: {out['error']}")
                n = int(out["seq"].shape[1] - ids.shape[1])
                clock.tokens = n
                reason = "length" if n >= params.max_new_tokens else "stop"
                yield replace(clock.last(reason, int(ids.shape[1])), notice=notice)
            finally:
                cancel.set()
                worker.join()

    def _generate_kwargs(self, ids, params: GenParams, streamer, cancel: threading.Event) -> dict:
        """model.generate's arguments: the template's stop tokens, sampling or greedy, Stop as a criterion."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return cancel.is_set()

        stop_ids = [i for s in self.template.stop
                    for i in [self.tokenizer.convert_tokens_to_ids(s)] if isinstance(i, int) and i >= 0]
        gen_kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                      max_new_tokens=params.max_new_tokens, repetition_penalty=params.repeat_penalty,
                      stopping_criteria=StoppingCriteriaList([_Cancel()]),
                      eos_token_id=stop_ids or None, pad_token_id=self.tokenizer.pad_token_id or 0)
        if params.stop:
            gen_kw.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if params.temperature > 0:
            gen_kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        else:
            gen_kw.update(do_sample=False)
        return gen_kw

    def logprobs(self, messages: list[dict], answer: str) -> list[float]:
        """Log-probability of each token of `answer` (and its end-of-turn marker) as the reply to `messages`.

        Logits are computed only for the answer's positions (logits_to_keep): a 262k-word LM head over
        the whole prompt would cost more than the model's layers."""
        self.load()
        import torch

        full, spans = self.template.training_text(messages + [{"role": "assistant", "content": answer}])
        start, end = spans[-1]
        prompt, target = self.tokenize(full[:start]), self.tokenize(full[start:end])
        ids = torch.tensor([prompt + target])
        with self._lock, torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                logits_to_keep=len(target) + 1).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(target)[:, None])[:, 0]
        return [float(x) for x in lp]

    def describe(self) -> dict:
        return {"location": self.location, "adapter": self.adapter_path,
                "template": self.template.name if self.template else None}
