"""Security (issue 13, item 5): 127.0.0.1 by default, --auth on every route, uploads under PET_HOME, no pickle."""

from __future__ import annotations

import base64
import os
import re
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pet.config import Settings
from tests.conftest import free_port, make_home

REPO = Path(__file__).resolve().parent.parent
AUTH = ("ann", "s3cret:with:colons")


def test_binds_127_0_0_1_by_default(monkeypatch, tmp_path):
    for k in ("PET_HOST", "SPACE_ID"):
        monkeypatch.delenv(k, raising=False)
    assert Settings.from_env(home=tmp_path).host == "127.0.0.1"
    monkeypatch.setenv("PET_HOST", "0.0.0.0")  # only when asked for
    assert Settings.from_env(home=tmp_path).host == "0.0.0.0"


def _routes(app):
    """(path, method) of every route the app serves, nested routers included."""
    def walk(routes, prefix=""):
        for r in routes:
            if hasattr(r, "path"):
                for m in sorted(getattr(r, "methods", None) or {"GET"}):
                    if m not in ("HEAD", "OPTIONS"):
                        yield prefix + r.path, m
            else:
                sub = getattr(r, "original_router", None) or getattr(r, "router", None)
                yield from walk(getattr(sub, "routes", []), prefix + (getattr(r, "prefix", "") or ""))
    return sorted(set(walk(app.routes)))


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """The real app (pages.launch) with --auth, in this process on a free port."""
    import pages

    home = make_home(tmp_path_factory.mktemp("secure-home"))
    old = os.environ.get("GRADIO_TEMP_DIR")
    settings = Settings.from_env(home=home, port=free_port(), auth=AUTH)
    app, url, _ = pages.launch(settings, block=False)
    yield app, url.rstrip("/"), home
    app.get_blocks().close()
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = old


@contextmanager
def _login(url: str):
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/login", data={"username": AUTH[0], "password": AUTH[1]})
        assert r.status_code == 200, r.text
        yield c


def test_auth_covers_every_route(secured):
    from pages.security import is_public

    app, url, _ = secured
    routes = _routes(app)
    assert ("/gradio_api/queue/join", "POST") in routes and ("/openapi.json", "GET") in routes
    open_routes = []
    with httpx.Client(base_url=url, timeout=30) as anon:
        for path, method in routes:
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            r = anon.request(method, concrete, json={} if method == "POST" else None)
            if r.status_code != 401:
                open_routes.append((path, method, r.status_code))
                assert is_public(concrete), f"{method} {path} answered {r.status_code} without a login"
    # what the login page may load shows nothing of the app's data
    with httpx.Client(base_url=url, timeout=30) as anon:
        page = anon.get("/").text
        assert "SmolLM2" not in page and "pet_examples" not in page
        assert anon.get("/config").status_code == 401
        assert anon.get("/gradio_api/info").status_code == 401
        assert anon.post("/gradio_api/call/chat", json={"data": []}).status_code == 401
        assert anon.post("/login", data={"username": AUTH[0], "password": "wrong"}).status_code == 400
    assert {p for p, _, _ in open_routes} <= {p for p, _ in routes}


def test_login_cookie_and_basic_credentials_reach_the_api(secured):
    _, url, _ = secured
    with _login(url) as c:
        assert c.get("/config").status_code == 200
        info = c.get("/gradio_api/info").json()
        assert "/chat" in info["named_endpoints"]
        assert c.get("/openapi.json").status_code == 200
    basic = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    with httpx.Client(base_url=url, timeout=30) as c:  # HTTP Basic opens the routes Gradio does not guard itself
        assert c.get("/openapi.json", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        bad = base64.b64encode(f"{AUTH[0]}:nope".encode()).decode()
        assert c.get("/openapi.json", headers={"Authorization": f"Basic {bad}"}).status_code == 401
        assert c.get("/openapi.json", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
    from gradio_client import Client

    client = Client(url, auth=AUTH, verbose=False)  # the API as a script uses it
    assert "/chat" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


@pytest.mark.parametrize("name", ["../../evil.jsonl", "..\\..\\evil.jsonl", "/etc/evil.jsonl"])
def test_uploads_land_under_pet_home_with_generated_folders(secured, name, tmp_path):
    _, url, home = secured
    with _login(url) as c:
        r = c.post("/gradio_api/upload", files={"files": (name, b'{"messages": []}\n', "application/json")})
    assert r.status_code == 200, r.text
    [stored] = r.json()
    stored = Path(stored).resolve()
    uploads = (home / "uploads").resolve()
    # one generated folder deep under PET_HOME/uploads, whatever path the name claimed
    assert stored.parent.parent == uploads and re.fullmatch(r"[0-9a-f]{16,}", stored.parent.name)
    assert stored.name.endswith("evil.jsonl") and stored.name not in (".", "..")
    assert not (home / "evil.jsonl").exists() and not (home.parent / "evil.jsonl").exists()


def test_uploads_over_the_size_limit_are_refused(secured, monkeypatch):
    from pet import dataset

    _, url, _ = secured
    with _login(url) as c:
        big = b"x" * (dataset.MAX_FILE_BYTES + 1)
        r = c.post("/gradio_api/upload", files={"files": ("big.jsonl", big, "application/json")})
    assert r.status_code == 413


PICKLE = re.compile(r"^\s*(import pickle|from pickle|import cPickle|import dill|import joblib|from joblib)|"
                    r"pickle\.loads?\(|torch\.load\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False|"
                    r"use_safetensors\s*=\s*False|safe_serialization\s*=\s*False", re.M)


def test_no_pickle_anywhere():
    """Nothing PET runs or writes goes through pickle: model weights and adapters are safetensors/GGUF,
    records are JSON and SQLite."""
    files = [p for d in ("pet", "pages", "bench", "scripts") for p in (REPO / d).rglob("*.py")] + [REPO / "app.py"]
    hits = [f"{p.relative_to(REPO)}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0).strip()}"
            for p in files for text in [p.read_text(encoding="utf-8")] for m in PICKLE.finditer(text)]
    assert len(files) > 40 and hits == []
    shipped = [p.name for p in (REPO / "assets").rglob("*") if p.is_file()]
    assert "adapter_model.safetensors" in shipped
    assert not [n for n in shipped if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]
