"""Tier registry: turns TierSpecs into loaded backends, lazily, and reports each tier's status.

A tier that cannot run says why and what to do; the others keep working.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pet import PetError, models
from pet.adapters import base_identity, check_base, gguf_adapter, read_adapter
from pet.backends.base import Backend, BackendError
from pet.config import REMOTE_BACKENDS, TierSpec


@dataclass
class TierState:
    state: str = "idle"  # idle (not loaded yet), loading, ready, unavailable
    reason: str = ""
    loaded_s: float | None = None


class UnknownTier(PetError):
    pass


ADHOC_PREFIX = "ollama:"


def is_adhoc(name: str) -> bool:
    return name.startswith(ADHOC_PREFIX) and len(name) > len(ADHOC_PREFIX)


class Registry:
    def __init__(self, specs: list[TierSpec], models_dir: Path, hf_cache: Path):
        self.models_dir = models_dir
        self.hf_cache = hf_cache
        self._specs: dict[str, TierSpec] = {s.name: s for s in specs}
        self._backends: dict[str, Backend] = {}
        self._states: dict[str, TierState] = {s.name: TierState() for s in specs}
        self._locks: dict[str, threading.Lock] = {s.name: threading.Lock() for s in specs}
        self._probe_cache: dict[str, tuple[float, bool, str]] = {}
        self._guard = threading.Lock()
        self._adhoc_specs: dict[str, TierSpec] = {}
        self._shared: dict[tuple, object] = {}  # one llama.cpp model per (GGUF file, context size)
        self.generation = 0  # bumped by put(): pages compare it to know when to refresh their tier lists

    # -- lookup -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._specs)

    def known(self, name: str) -> bool:
        """A tier of the file, or an `ollama:MODEL` name: what every caller may pass to spec()."""
        return name in self._specs or is_adhoc(name)

    def spec(self, name: str) -> TierSpec:
        if name not in self._specs:
            if is_adhoc(name):
                return self._adhoc(name)
            raise UnknownTier(f"unknown tier {name!r}; valid tiers: {', '.join(self._specs)} "
                              f"(or {ADHOC_PREFIX}MODEL for any model your Ollama server has)")
        return self._specs[name]

    def _adhoc(self, name: str) -> TierSpec:
        """`ollama:MODEL` works wherever a tier name does (chat, compare, judge) without a tiers-file entry.

        It is not listed in names(), so pickers and the arena draw only the tiers the user defined."""
        with self._guard:
            if name not in self._adhoc_specs:
                model = name[len(ADHOC_PREFIX):]
                self._adhoc_specs[name] = TierSpec(name=name, backend="ollama", model=model,
                                                   host=os.environ.get("OLLAMA_HOST") or None,
                                                   description=f"Ollama model {model} (not in the tiers file)")
                self._states.setdefault(name, TierState())
                self._locks.setdefault(name, threading.Lock())
            return self._adhoc_specs[name]

    def put(self, spec: TierSpec) -> None:
        """Add a tier or replace one (hot swap): the old backend is dropped, the new loads lazily."""
        with self._guard:
            self._specs[spec.name] = spec
            old = self._backends.pop(spec.name, None)
            self._states[spec.name] = TierState()
            self._locks.setdefault(spec.name, threading.Lock())
            self.generation += 1
        if old is not None:
            old.close()

    # -- status -----------------------------------------------------------------------------
    def check(self, spec: TierSpec) -> tuple[bool, str]:
        """Can this tier run here? Cheap: no model is loaded (an Ollama server gets one short probe)."""
        need = {"llamacpp": "llama_cpp", "hf": "transformers"}.get(spec.backend)
        if need and importlib.util.find_spec(need) is None:
            pkg = {"llama_cpp": "llama-cpp-python"}.get(need, need)
            return False, f"{pkg} is not installed: run `pip install {pkg}`"
        ok, why = models.available(spec.model, spec.backend)
        if not ok:
            return False, why
        if spec.adapter and not Path(spec.adapter, "pet_adapter.json").exists():
            return False, f"adapter {spec.adapter} not found: train one with `python -m pet train` or fix the path"
        if spec.backend in REMOTE_BACKENDS:
            return self._probe_remote(spec)
        return True, ""

    def _probe_remote(self, spec: TierSpec, ttl: float = 10.0) -> tuple[bool, str]:
        now = time.monotonic()
        hit = self._probe_cache.get(spec.name)
        if hit and now - hit[0] < ttl:
            return hit[1], hit[2]
        try:
            ok, why = self._remote(spec).probe()
        except BackendError as e:
            ok, why = False, str(e)
        self._probe_cache[spec.name] = (now, ok, why)
        return ok, why

    def status(self, name: str, probe: bool = True) -> dict:
        spec = self.spec(name)
        st = self._states[name]
        if st.state in ("ready", "loading"):
            ok, why = True, ""
        elif probe:
            ok, why = self.check(spec)
        else:
            ok, why = st.state != "unavailable", st.reason
        state = st.state if ok or st.state in ("ready", "loading") else "unavailable"
        if ok and state == "unavailable":
            state = "idle"  # what failed before (a server that was down) answers again: it loads on next use
        model_path = None
        if spec.backend not in REMOTE_BACKENDS and ok:
            p = Path(spec.model).expanduser()
            if p.is_file():
                model_path = str(p)
            elif spec.model.startswith("pkg:"):
                try:
                    model_path = str(models.resolve(spec.model, spec.backend, self.models_dir).path)
                except PetError:
                    model_path = None
        return {"name": name, "backend": spec.backend, "model": spec.model, "model_path": model_path,
                "adapter": spec.adapter, "description": spec.description, "available": ok,
                "reason": why or st.reason if not ok else "", "state": state,
                "loaded_s": st.loaded_s}

    def mark_failed(self, name: str, reason: str) -> None:
        """A loaded tier that failed mid-answer (its server died, say): drop it and show it unavailable.
        The next request loads it afresh, so a server that comes back is used again."""
        with self._guard:
            old = self._backends.pop(name, None)
            self._states[name] = TierState("unavailable", reason)
            self._probe_cache.pop(name, None)
        if old is not None:
            old.close()

    def loaded(self, name: str) -> Backend | None:
        return self._backends.get(name)

    # -- loading ----------------------------------------------------------------------------
    def backend(self, name: str) -> Backend:
        spec = self.spec(name)
        b = self._backends.get(name)
        if b is not None:
            return b
        with self._locks[name]:
            b = self._backends.get(name)
            if b is not None:
                return b
            st = self._states[name]
            st.state, st.reason = "loading", ""
            t0 = time.perf_counter()
            try:
                b = self._build(spec)
                b.load()
            except PetError as e:
                st.state, st.reason = "unavailable", str(e)
                raise BackendError(f"tier {name!r} is unavailable: {e}") from None
            st.state, st.loaded_s = "ready", time.perf_counter() - t0
            self._backends[name] = b
            return b

    def _build(self, spec: TierSpec) -> Backend:
        ok, why = self.check(spec)
        if not ok:
            raise BackendError(why)
        if spec.backend in REMOTE_BACKENDS:
            return self._remote(spec)
        ref = models.resolve(spec.model, spec.backend, self.models_dir)
        adapter = None
        if spec.adapter:
            adapter = read_adapter(spec.adapter)
            check_base(adapter, base_identity(ref.ref, ref.path))
        if spec.backend == "llamacpp":
            from pet.backends.llamacpp import LlamaCppBackend

            if ref.kind == "hub" and ref.ref.endswith(".gguf"):
                ref = models.hub_gguf(ref)
            if ref.path is None or ref.path.suffix != ".gguf":
                raise BackendError(f"llama.cpp needs a .gguf file; {spec.model!r} is not one (give a local "
                                   "file, pkg:NAME or ORG/REPO/FILE.gguf, or use backend = \"hf\")")
            lora = gguf_adapter(adapter) if adapter else None
            return LlamaCppBackend(ref.path, n_ctx=spec.params.n_ctx, lora_path=lora,
                                   template_override=spec.template, shared=self._shared_model(ref.path, spec))
        from pet.backends.hf import HFBackend

        return HFBackend(models.hf_folder(ref, self.hf_cache), str(adapter.path) if adapter else None,
                         template_override=spec.template)

    def _shared_model(self, path: Path, spec: TierSpec):
        """Tiers on one GGUF file with one context size (base and enhanced) share one loaded model."""
        from pet.backends.llamacpp import SharedModel

        key = (str(Path(path).resolve()), spec.params.n_ctx)
        with self._guard:
            if key not in self._shared:
                self._shared[key] = SharedModel(path, spec.params.n_ctx, max(1, os.cpu_count() or 1))
            return self._shared[key]

    @staticmethod
    def _remote(spec: TierSpec) -> Backend:
        if spec.backend == "openai":
            from pet.backends.openai import OpenAIBackend

            return OpenAIBackend(spec.model, spec.host or "", spec.api_key_env)
        from pet.backends.ollama import OllamaBackend

        return OllamaBackend(spec.model, spec.host)

    def is_remote(self, name: str) -> bool:
        """Served by another process (Ollama, an OpenAI-compatible server): safe to run beside others."""
        return self.spec(name).backend in REMOTE_BACKENDS

    def with_params(self, name: str, **kw) -> TierSpec:
        spec = self.spec(name)
        return replace(spec, params=spec.params.with_overrides(**kw))
