"""Settings and the tiers file, as small dataclasses that check themselves.

A bad tiers file raises one ConfigError that lists every problem with its key path
(`tiers.light.params.temperature: must be between 0 and 2, got 5`), never just the first.
"""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pet import PetError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIERS = REPO_ROOT / "data" / "tiers.toml"
BACKENDS = ("llamacpp", "hf", "ollama", "openai")
REMOTE_BACKENDS = ("ollama", "openai")  # served by another process: no local weights, no local lock


class ConfigError(PetError):
    def __init__(self, problems: list[str], source: str = ""):
        self.problems = problems
        head = f"{source}: " if source else ""
        super().__init__(head + f"{len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class GenParams:
    """Generation settings shared by every backend (names follow llama.cpp/Ollama)."""

    temperature: float = 0.3
    top_p: float = 0.9
    top_k: int = 40
    n_ctx: int = 2048
    max_new_tokens: int = 512
    repeat_penalty: float = 1.1
    seed: int | None = None
    # Decoding that stays on the request (pet/decoding.py): these wrap any backend.
    loop_guard: bool = True  # end an answer that starts repeating itself (finish_reason "loop")
    fewshot: int = 0  # put the K curated examples nearest the request in as earlier turns
    best_of: int = 1  # sample N answers, return the one that best keeps the request's task
    drop_avoid: bool = False  # leave the answer's negative lines ("Avoid: ...", "Do not ...") out
    echo_request: bool = False  # after the first line (the role), the request goes in word for word (local models)
    stop: tuple[str, ...] = ()  # extra stop strings, besides the template's end-of-turn markers

    def problems(self, where: str = "params") -> list[str]:
        out = []
        if not 0 <= self.temperature <= 2:
            out.append(f"{where}.temperature: must be between 0 and 2, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            out.append(f"{where}.top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            out.append(f"{where}.top_k: must be >= 0 (0 = off), got {self.top_k}")
        if not 128 <= self.n_ctx <= 131072:
            out.append(f"{where}.n_ctx: must be between 128 and 131072, got {self.n_ctx}")
        if not 1 <= self.max_new_tokens <= self.n_ctx:
            out.append(f"{where}.max_new_tokens: must be between 1 and n_ctx ({self.n_ctx}), got {self.max_new_tokens}")
        if not 0.5 <= self.repeat_penalty <= 2:
            out.append(f"{where}.repeat_penalty: must be between 0.5 and 2, got {self.repeat_penalty}")
        if self.seed is not None and not 0 <= self.seed < 2**31:
            out.append(f"{where}.seed: must be between 0 and 2^31-1, got {self.seed}")
        if not 0 <= self.fewshot <= 8:
            out.append(f"{where}.fewshot: must be between 0 and 8 examples, got {self.fewshot}")
        if not 1 <= self.best_of <= 8:
            out.append(f"{where}.best_of: must be between 1 and 8 candidates, got {self.best_of}")
        if not isinstance(self.stop, tuple) or not all(isinstance(x, str) and x for x in self.stop):
            out.append(f"{where}.stop: must be a list of non-empty strings, got {self.stop!r}")
        return out

    def __post_init__(self):
        p = self.problems()
        if p:
            raise ConfigError(p)

    def with_overrides(self, **kw: Any) -> GenParams:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PARAM_TYPES = {"temperature": float, "top_p": float, "top_k": int, "n_ctx": int,
               "max_new_tokens": int, "repeat_penalty": float, "seed": int,
               "loop_guard": bool, "fewshot": int, "best_of": int, "drop_avoid": bool,
               "echo_request": bool}


@dataclass(frozen=True)
class TierSpec:
    """One tier: a backend, a model reference, an optional adapter, a system prompt and params."""

    name: str
    backend: str
    model: str
    system_prompt: str = ""
    adapter: str | None = None
    template: str | None = None  # None/"auto": the model's own, or the family's built-in
    params: GenParams = field(default_factory=GenParams)
    description: str = ""
    host: str | None = None  # server address: Ollama's, or an OpenAI-compatible base URL (.../v1)
    api_key_env: str | None = None  # backend = "openai": the environment variable that holds the key
    # The languages the tier was tuned to write (ISO 639-1 codes); empty: not stated. A request in another
    # language gets a notice that names the tiers tuned for it (pet/language.py guesses the language).
    languages: tuple[str, ...] = ()


_TIER_KEYS = {"backend", "model", "system_prompt", "system_prompt_file", "adapter", "template",
              "params", "description", "host", "api_key_env", "languages"}


def _parse_params(raw: Any, where: str, base: GenParams, problems: list[str]) -> GenParams:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table, got {type(raw).__name__}")
        return base
    values = base.as_dict()
    for key, val in raw.items():
        typ = PARAM_TYPES.get(key)
        if typ is None:
            problems.append(f"{where}.{key}: unknown setting (valid: {', '.join(PARAM_TYPES)})")
            continue
        if typ is bool:
            if not isinstance(val, bool):
                problems.append(f"{where}.{key}: must be true or false, got {val!r}")
                continue
        elif isinstance(val, bool) or not isinstance(val, (int, float)) or (typ is int and not isinstance(val, int)):
            problems.append(f"{where}.{key}: must be {'an integer' if typ is int else 'a number'}, got {val!r}")
            continue
        values[key] = typ(val)
    candidate = object.__new__(GenParams)
    for k, v in values.items():
        object.__setattr__(candidate, k, v)
    errs = candidate.problems(where)
    if errs:
        problems.extend(errs)
        return base
    return GenParams(**values)


def _resolve_path(value: str, base_dir: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base_dir / p))


TIER_NAME_RULE = "tier names use letters, digits, '-' and '_' only"


def valid_tier_name(name: str) -> bool:
    """The one tier-name rule (the tiers file, and a new tier made from a trained adapter)."""
    return name.replace("-", "").replace("_", "").isalnum()


def _languages(where: str, raw: dict, problems: list[str]) -> tuple[str, ...]:
    val = raw.get("languages", [])
    if not isinstance(val, list) or not all(isinstance(x, str) and len(x) == 2 and x.isalpha() and x.islower()
                                            for x in val):
        problems.append(f"{where}.languages: must be a list of two-letter language codes, e.g. [\"en\", \"es\"], "
                        f"got {val!r}")
        return ()
    return tuple(val)


def _backend_problems(where: str, backend: Any, raw: dict) -> list[str]:
    """What a tier asks of its backend that the backend cannot give."""
    out = []
    if backend == "openai" and not raw.get("host"):
        out.append(f"{where}.host: required for backend \"openai\" (the server's base URL, "
                   "e.g. http://127.0.0.1:8000/v1)")
    own = raw.get("params") if isinstance(raw.get("params"), dict) else {}
    if backend in ("ollama", "openai") and own.get("echo_request") is True:
        out.append(f"{where}.params.echo_request: needs a model PET runs itself (backend llamacpp or hf), "
                   "which can go on from an answer already started; remove it for this tier")
    return out


def parse_tiers(data: dict[str, Any], base_dir: Path, source: str = "") -> list[TierSpec]:
    problems: list[str] = []
    defaults = _parse_params(data.get("defaults"), "defaults", GenParams(), problems)
    tiers_raw = data.get("tiers")
    for key in data:
        if key not in ("defaults", "tiers"):
            problems.append(f"{key}: unknown top-level key (expected [defaults] and [tiers.NAME] tables)")
    if not isinstance(tiers_raw, dict) or not tiers_raw:
        problems.append("tiers: no tiers defined; add at least one [tiers.NAME] table")
        raise ConfigError(problems, source)
    out = []
    for name, raw in tiers_raw.items():
        where = f"tiers.{name}"
        if not valid_tier_name(name):
            problems.append(f"{where}: {TIER_NAME_RULE}")
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in raw:
            if key not in _TIER_KEYS:
                problems.append(f"{where}.{key}: unknown key (valid: {', '.join(sorted(_TIER_KEYS))})")
        backend = raw.get("backend")
        if backend not in BACKENDS:
            problems.append(f"{where}.backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
        model = raw.get("model")
        if not isinstance(model, str) or not model.strip():
            problems.append(f"{where}.model: required (a packaged model 'pkg:NAME', a file or folder, "
                            "a Hugging Face id or an Ollama model name)")
        system = raw.get("system_prompt", "")
        if "system_prompt_file" in raw:
            path = Path(_resolve_path(str(raw["system_prompt_file"]), base_dir))
            try:
                system = path.read_text(encoding="utf-8").strip()
            except OSError as e:
                problems.append(f"{where}.system_prompt_file: cannot read {path}: {e.strerror}")
        if not isinstance(system, str):
            problems.append(f"{where}.system_prompt: must be a string")
            system = ""
        for key in ("adapter", "template", "description", "host", "api_key_env"):
            if key in raw and not isinstance(raw[key], str):
                problems.append(f"{where}.{key}: must be a string, got {raw[key]!r}")
        problems += _backend_problems(where, backend, raw)
        params = _parse_params(raw.get("params"), f"{where}.params", defaults, problems)
        adapter = raw.get("adapter")
        if isinstance(adapter, str) and adapter:
            adapter = _resolve_path(adapter, base_dir)
        model_ref = model if isinstance(model, str) else ""
        if isinstance(model, str) and (model.startswith("./") or model.startswith("../")):
            model_ref = _resolve_path(model, base_dir)
        if not problems or all(not p.startswith(where) for p in problems):
            out.append(TierSpec(name=name, backend=str(backend), model=model_ref, system_prompt=system,
                                adapter=adapter or None, template=raw.get("template") or None,
                                params=params, description=str(raw.get("description", "")),
                                host=raw.get("host"), api_key_env=raw.get("api_key_env") or None,
                                languages=_languages(where, raw, problems)))
    if problems:
        raise ConfigError(problems, source)
    return out


def load_tiers(path: str | Path | None = None) -> list[TierSpec]:
    path = Path(path or os.environ.get("PET_TIERS") or DEFAULT_TIERS)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"cannot read tiers file {path}: {e.strerror}; set PET_TIERS to a readable TOML file"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e}"], str(path))
    return parse_tiers(data, path.parent, str(path))


OVERLAY_FILE = "tiers.local.toml"


def merge_overlay(specs: list[TierSpec], overlay: Path) -> list[TierSpec]:
    """Tiers the app itself saved (PET_HOME/tiers.local.toml, e.g. a fine-tune made the enhanced tier):
    each [tiers.NAME] there replaces the tier of that name or adds a new one."""
    if not overlay.exists():
        return specs
    try:
        data = tomllib.loads(overlay.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError([f"cannot read {overlay}: {e}; fix or delete it to go back to the tiers file"])
    extra = {s.name: s for s in parse_tiers(data, overlay.parent, str(overlay))}
    merged = [extra.pop(s.name, s) for s in specs]
    return merged + list(extra.values())


def default_home() -> Path:
    if os.environ.get("PET_HOME"):
        return Path(os.environ["PET_HOME"]).expanduser()
    # On a Hugging Face Space, persistent storage (when enabled) is mounted at /data.
    if os.environ.get("SPACE_ID") and os.path.isdir("/data") and os.access("/data", os.W_OK):
        return Path("/data/pet-studio")
    from platformdirs import user_data_dir

    return Path(user_data_dir("pet-studio", appauthor=False))


class ReadOnly(PetError):
    """A write refused because the app is a public read-only demo."""


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def available_cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadBudget:
    """How the CPU is shared between serving (the app's models) and a background training job.

    Two processes that each start one thread per core oversubscribe the CPU, and llama.cpp's threads
    spin while they wait for each other: measured on 2 cores, chat fell from 107 to 24 tokens/s and
    training slowed by 45%. So while a training job runs, serving uses `serve` threads and the job
    `train`, which by default add up to `cores`; with no job running, serving uses every core.
    """

    cores: int
    serve: int
    train: int
    max_jobs: int = 1  # training jobs at a time; each gets `train` threads

    def problems(self) -> list[str]:
        out = []
        for name, env, value in (("cores", "PET_THREADS", self.cores), ("serve", "PET_SERVE_THREADS", self.serve),
                                 ("train", "PET_TRAIN_THREADS", self.train)):
            if not 1 <= value <= 1024:
                out.append(f"{env}: must be between 1 and 1024 threads, got {value}")
        if not 1 <= self.max_jobs <= 16:
            out.append(f"PET_MAX_JOBS: must be between 1 and 16 training jobs, got {self.max_jobs}")
        return out

    def serving(self, training_jobs: int) -> int:
        """Threads a model should use for the next request, given how many training jobs run now."""
        return self.serve if training_jobs else self.cores

    @classmethod
    def from_env(cls, env=None) -> ThreadBudget:
        env = os.environ if env is None else env
        problems = []

        def number(name: str, default: int) -> int:
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                problems.append(f"{name}: must be a whole number, got {raw!r}")
                return default

        cores = number("PET_THREADS", available_cores())
        serve = number("PET_SERVE_THREADS", max(1, cores // 2))
        train = number("PET_TRAIN_THREADS", max(1, cores - serve))
        budget = cls(cores=cores, serve=serve, train=train, max_jobs=number("PET_MAX_JOBS", 1))
        problems += budget.problems()
        if problems:
            raise ConfigError(problems)
        return budget


@dataclass(frozen=True)
class Settings:
    home: Path
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None
    tiers_path: Path = DEFAULT_TIERS
    max_upload_mb: int = 50  # PET_MAX_UPLOAD_MB: a bigger upload is refused while it arrives, before it is on disk
    space: bool = False  # on a Hugging Face Space (SPACE_ID is set): public, bound to all interfaces
    allow_writes: bool = False  # PET_ALLOW_WRITES: a Space owner's opt-in to edits without a login
    threads: ThreadBudget = field(default_factory=lambda: ThreadBudget.from_env())

    @property
    def read_only(self) -> bool:
        """A Space with no login is a public demo: nobody may change its data, train or swap adapters,
        unless its owner opted in with PET_ALLOW_WRITES=1."""
        return self.space and self.auth is None and not self.allow_writes

    def check_writable(self, action: str) -> None:
        if self.read_only:
            raise ReadOnly(f"cannot {action}: this Space is a read-only demo (it has no login, so anyone could "
                           "change it). Its owner can set PET_AUTH=USER:PASS in the Space's secrets to require a "
                           "login, or PET_ALLOW_WRITES=1 to let every visitor edit, import and train.")

    @staticmethod
    def parse_auth(value: str | None, flag: str = "--auth") -> tuple[str, str] | None:
        if not value:
            return None
        user, sep, pw = value.partition(":")
        if not sep or not user or not pw:
            raise ConfigError([f"{flag}: expected USER:PASS, got {value!r}"])
        return user, pw

    @classmethod
    def from_env(cls, **over: Any) -> Settings:
        home = over.pop("home", None) or default_home()
        port_raw = os.environ.get("PET_PORT") or os.environ.get("GRADIO_SERVER_PORT") or "7860"
        problems = []
        try:
            port = int(port_raw)
        except ValueError:
            problems.append(f"PET_PORT: must be a port number, got {port_raw!r}")
            port = 7860
        try:
            auth = cls.parse_auth(os.environ.get("PET_AUTH"), "PET_AUTH")
        except ConfigError as e:
            problems += e.problems
            auth = None
        upload_raw = os.environ.get("PET_MAX_UPLOAD_MB") or "50"
        max_upload = int(upload_raw) if upload_raw.strip().isdigit() else 0
        if not 1 <= max_upload <= 10240:
            problems.append(f"PET_MAX_UPLOAD_MB: must be a whole number of megabytes from 1 to 10240, got {upload_raw!r}")
            max_upload = 50
        writes_raw = os.environ.get("PET_ALLOW_WRITES", "").strip().lower()
        if writes_raw not in TRUE_WORDS + FALSE_WORDS:
            problems.append(f"PET_ALLOW_WRITES: must be 1 or 0, got {writes_raw!r}")
        try:
            threads = ThreadBudget.from_env()
        except ConfigError as e:
            problems += e.problems
            threads = None
        if problems:
            raise ConfigError(problems)
        s = cls(home=Path(home), host=os.environ.get("PET_HOST", "127.0.0.1"), port=port, auth=auth,
                tiers_path=Path(os.environ.get("PET_TIERS") or DEFAULT_TIERS), max_upload_mb=max_upload,
                space=bool(os.environ.get("SPACE_ID")), allow_writes=writes_raw in TRUE_WORDS, threads=threads)
        return replace(s, **{k: v for k, v in over.items() if v is not None})

    def path(self, *parts: str) -> Path:
        p = self.home.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def export_path(self, name: str, keep_s: float = 86400.0) -> Path:
        """Where a file offered for download goes: PET_HOME/exports/NAME (the one folder the web app may
        serve files from). Exports older than a day are removed first: they were downloaded or forgotten."""
        folder = self.path("exports")
        cutoff = time.time() - keep_s
        for old in folder.iterdir():
            try:
                if old.is_file() and old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:
                pass  # another export is cleaning up the same file
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise PetError(f"export file name {name!r}: use a plain file name")
        return folder / name
