"""The one Engine object: settings, the tier registry and the store. Pages and the CLI call only this."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

from pet import templates
from pet.backends.base import Answer, Chunk, collect
from pet.config import GenParams, Settings, load_tiers
from pet.store import Store
from pet.tiers import Registry


class Engine:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        specs = load_tiers(self.settings.tiers_path)
        self.tiers = Registry(specs, self.settings.path("models"), self.settings.path("cache", "hf"))

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.home / "pet.db")

    def tier_status(self, probe: bool = True) -> list[dict]:
        return [self.tiers.status(n, probe=probe) for n in self.tiers.names()]

    def params_for(self, tier: str, **overrides) -> GenParams:
        return self.tiers.spec(tier).params.with_overrides(**overrides)

    def stream(self, tier: str, messages: list[dict], params: GenParams | None = None,
               system: str | None = None) -> Iterator[Chunk]:
        """Stream a tier's answer. `system` None means the tier's own system prompt; "" means none."""
        spec = self.tiers.spec(tier)
        msgs = templates.with_system(messages, spec.system_prompt if system is None else system)
        backend = self.tiers.backend(tier)
        yield from backend.stream(msgs, params or spec.params)

    def generate(self, tier: str, messages: list[dict], params: GenParams | None = None,
                 system: str | None = None) -> Answer:
        return collect(self.stream(tier, messages, params, system))
