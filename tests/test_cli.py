import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def pet(*args, env_home, timeout=300):
    import os

    env = dict(os.environ, PET_HOME=str(env_home))
    return subprocess.run([sys.executable, "-m", "pet", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_tiers_json(pet_home):
    r = pet("tiers", "--json", env_home=pet_home)
    assert r.returncode == 0, r.stderr
    rows = {t["name"]: t for t in json.loads(r.stdout)}
    for t in rows.values():
        assert {"name", "backend", "model", "model_path", "available", "reason"} <= set(t)
    assert rows["light"]["available"] and rows["light"]["model_path"].endswith(".gguf")
    assert rows["power"]["backend"] == "ollama" and rows["power"]["available"] is False
    assert "ollama serve" in rows["power"]["reason"]


@pytest.mark.parametrize("args,needle", [
    (("chat", "--tier", "nope", "hi"), "unknown tier 'nope' (choose from light, enhanced"),
    (("chat", "--tier", "light", "--temperature", "9", "hi"), "argument --temperature: must be between 0 and 2"),
    (("chat", "--tier", "light", "--max-tokens", "x", "hi"), "argument --max-tokens: invalid int value"),
    (("chat", "hi"), "the following arguments are required: --tier"),
    (("bench", "speed", "--tier", "zzz"), "unknown tier 'zzz'"),
    (("serve", "--auth", "nopass"), "--auth: expected USER:PASS"),
    (("serve", "--port", "99999"), "argument --port: must be 1-65535"),
])
def test_bad_flags_exit_2_without_traceback(pet_home, args, needle):
    r = pet(*args, env_home=pet_home)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_any_ollama_model_by_name_is_a_clear_error_without_a_server(pet_home):
    r = pet("chat", "--tier", "ollama:llama3.2", "hi", env_home=pet_home)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "tier 'ollama:llama3.2' is unavailable: no Ollama server answers" in r.stderr


def test_unavailable_tier_is_a_clear_error(pet_home):
    r = pet("chat", "--tier", "power", "hi", env_home=pet_home)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "tier 'power' is unavailable: no Ollama server answers" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["light", "enhanced"])
def test_chat_prints_a_real_answer(pet_home, tier):
    r = pet("chat", "--tier", tier, "--max-tokens", "40", "--seed", "1", "--stats",
            "improve this prompt: write a poem", env_home=pet_home)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) >= 5
    assert "tok/s" in r.stderr and "TTFT" in r.stderr
    # stderr is PET's own: llama.cpp's notes on loading the model and the tier's LoRA stay out of it
    assert "llama_" not in r.stderr and "CPU_REPACK" not in r.stderr, r.stderr[:500]


def test_chat_notes_a_request_in_a_language_the_tier_was_not_tuned_on(pet_home):
    r = pet("chat", "--tier", "light", "--max-tokens", "4", "--seed", "1",
            "escribe un poema sobre el mar para el cumpleaños de mi abuela", env_home=pet_home)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("note: light was tuned on English requests; this one looks Spanish") == 1
    assert "Try enhanced, tuned on Spanish requests too." in r.stderr and r.stdout.strip()


@pytest.mark.slow
def test_bench_speed_json_last_line(pet_home):
    r = pet("bench", "speed", "--tier", "light", "--max-tokens", "32", "--json", env_home=pet_home)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res) == {"tier", "tokens", "tok_s", "ttft_s"} and res["tier"] == "light"
    assert res["tokens"] > 1 and res["tok_s"] > 0


@pytest.mark.slow
def test_compare_takes_any_ollama_model_by_name(pet_home):
    r = pet("compare", "--tiers", "light,ollama:qwen3", "--seed", "1", "--max-tokens", "12", "--no-save", "hi",
            env_home=pet_home)
    assert r.returncode == 0, r.stderr
    assert "=== light ===" in r.stdout and "tok/s" in r.stdout
    assert "=== ollama:qwen3 ===\nunavailable: no Ollama server answers" in r.stdout
    r = pet("compare", "--tiers", "light,nope", "hi", env_home=pet_home)
    assert r.returncode == 2 and "unknown tier(s) nope" in r.stderr
