"""Chat templates: one per model family, rendered the same way for training, llama.cpp and Ollama.

Templates are Jinja, rendered as transformers renders them (sandboxed, trim_blocks,
lstrip_blocks), so a model's own template and PET's built-ins go through one code path.
Gemma 3 has no system turn: the system text goes at the top of the first user turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pet import PetError

GEMMA3 = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}"
)

CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\n' }}"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    source: str  # Jinja text
    bos_token: str = ""
    eos_token: str = ""
    stop: tuple[str, ...] = ()

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        check_messages(messages)
        try:
            return _compile(self.source).render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token)
        except _TemplateError as e:
            raise PetError(f"chat template {self.name!r}: {e}") from None

    def training_text(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """Render a whole conversation and return the character spans the loss is taken on.

        Each assistant turn's span runs from the end of the prompt that precedes it
        (rendered with a generation prompt) to the end of the turn, including its
        end-of-turn marker, so the model learns where to stop.
        """
        full = self.render(messages, add_generation_prompt=False)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prefix = self.render(messages[:i], add_generation_prompt=True)
            upto = self.render(messages[: i + 1], add_generation_prompt=False)
            if not full.startswith(upto) or not upto.startswith(prefix):
                raise PetError(f"chat template {self.name!r} does not render conversations prefix-consistently; "
                               "set the tier's template to 'gemma3' or 'chatml'")
            spans.append((len(prefix), len(upto)))
        return full, spans


class _TemplateError(Exception):
    pass


def _raise(msg: str):
    raise _TemplateError(msg)


@lru_cache(maxsize=32)
def _compile(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list):
        raise PetError("messages must be a list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise PetError(f"message {i}: role must be system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise PetError(f"message {i}: content must be text")
        if m["role"] == "system" and i != 0:
            raise PetError(f"message {i}: a system message may only come first")


BUILTIN = {
    "gemma3": ChatTemplate("gemma3", GEMMA3, bos_token="<bos>", eos_token="<eos>",
                           stop=("<end_of_turn>", "<eos>")),
    "chatml": ChatTemplate("chatml", CHATML, bos_token="", eos_token="<|im_end|>", stop=("<|im_end|>",)),
}


def family_of(own_template: str | None, architecture: str | None = None) -> str | None:
    """Recognise a built-in family from a model's own Jinja template or its architecture."""
    if own_template:
        if "<start_of_turn>" in own_template:
            return "gemma3"
        if "<|im_start|>" in own_template:
            return "chatml"
    if architecture and architecture.lower().startswith("gemma"):
        return "gemma3"
    return None


def choose(override: str | None, own_template: str | None, architecture: str | None,
           bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """The tier's override if set; else the model's own template; else its family's built-in."""
    if override and override != "auto":
        if override in BUILTIN:
            return BUILTIN[override]
        raise PetError(f"template {override!r} is not known; use one of: auto, {', '.join(BUILTIN)}")
    fam = family_of(own_template, architecture)
    if own_template:
        stop = set(BUILTIN[fam].stop) if fam else set()
        if eos_token:
            stop.add(eos_token)
        return ChatTemplate(f"model's own ({fam or 'unknown family'})", own_template, bos_token=bos_token,
                            eos_token=eos_token, stop=tuple(sorted(stop)))
    if fam:
        return BUILTIN[fam]
    raise PetError("the model carries no chat template and its family is not known: set `template` in the "
                   f"tier to one of {', '.join(BUILTIN)}")


def last_user(messages: list[dict]) -> str:
    """The latest request in a conversation ("" when there is none)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Put the tier's system prompt first unless the conversation already starts with one."""
    msgs = [dict(m) for m in messages]
    if system and not (msgs and msgs[0]["role"] == "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


# Ollama Modelfile TEMPLATEs (Go text/template), one per family, written to render a conversation
# exactly as the Jinja templates above do; pet/export.py proves it token by token before every export.
# Ollama adds the BOS token itself when it tokenises, so these start without it. Gemma 3 has no
# system turn: the system text (Ollama's .System) opens the first user turn, as in GEMMA3 above.
OLLAMA = {
    "gemma3": (
        "{{- $first := true }}\n"
        "{{- range $i, $m := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        "{{- if eq $m.Role \"user\" }}<start_of_turn>user\n"
        "{{ if and $first $.System }}{{ $.System }}\n\n{{ end }}{{ $m.Content }}<end_of_turn>\n"
        "{{ if $last }}<start_of_turn>model\n{{ end }}\n"
        "{{- $first = false }}\n"
        "{{- else if eq $m.Role \"assistant\" }}<start_of_turn>model\n"
        "{{ $m.Content }}{{ if not $last }}<end_of_turn>\n{{ end }}\n"
        "{{- end }}\n"
        "{{- end }}"
    ),
    "chatml": (
        "{{- range $i, $m := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
        "<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n"
        "{{ if and $last (ne $m.Role \"assistant\") }}<|im_start|>assistant\n{{ end }}\n"
        "{{- end }}"
    ),
}
