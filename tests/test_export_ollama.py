"""Export to Ollama: template parity (and a broken template it catches), the merged model agreeing
with base + adapter, the folder `ollama create` reads, and --create against a fake that records calls.

No Ollama server exists here: the fake checks what PET sends, not what Ollama does with it.
"""


import hashlib
import json
import threading

import pytest

from pet import PetError, templates
from pet.export import parity_check

# Ollama's stock Gemma 3 template (system text in a turn of its own): a common fine-tuning mistake.
STOCK_GEMMA3 = (
    "{{- range $i, $_ := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    "{{- if or (eq .Role \"user\") (eq .Role \"system\") }}<start_of_turn>user\n"
    "{{ .Content }}<end_of_turn>\n"
    "{{ if $last }}<start_of_turn>model\n{{ end }}\n"
    "{{- else if eq .Role \"assistant\" }}<start_of_turn>model\n"
    "{{ .Content }}{{ if not $last }}<end_of_turn>\n{{ end }}\n"
    "{{- end }}\n"
    "{{- end }}"
)


# -- parity on the real enhanced tier (tokenisers only: no weights are run) ------------------------------

@pytest.mark.slow
def test_parity_holds_for_the_enhanced_tier(engine):
    from pet.export import tier_parity

    r = tier_parity(engine, "enhanced")
    assert r["ok"], r["message"]
    assert r["lengths"]["trainer"] == r["lengths"]["llama.cpp"] == r["lengths"]["ollama"] > 100  # system prompt included


@pytest.mark.slow
@pytest.mark.parametrize("broken,where", [
    (STOCK_GEMMA3, "'<end_of_turn>'"),  # the system prompt closed as a turn of its own
    (templates.OLLAMA["gemma3"].replace("{{ $.System }}\n\n", "{{ $.System }}\n"), None),  # one newline short
    ("<bos>" + templates.OLLAMA["gemma3"], "'<bos>'"),  # BOS twice: the template and the tokenizer
], ids=["system-as-own-turn", "newline-short", "double-bos"])
def test_parity_catches_a_broken_template_and_names_the_first_difference(engine, broken, where):
    from pet.export import tier_parity

    r = tier_parity(engine, "enhanced", broken)
    assert not r["ok"]
    d = r["first_difference"]
    assert d["tokens"]["trainer"]["id"] == d["tokens"]["llama.cpp"]["id"] != d["tokens"]["ollama"]["id"]
    assert f"failed at token {d['index']}" in r["message"] and "export refused" in r["message"]
    if where:
        assert f"ollama: {where}" in r["message"]


def test_parity_check_compares_ids_not_just_text():
    """Same text, a tokenizer that splits differently on one side: the ids decide."""
    tmpl = templates.BUILTIN["chatml"]

    class Tok:  # offsets like a fast tokenizer: one token per character
        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
            return {"input_ids": [ord(c) for c in text], "offset_mapping": [(i, i + 1) for i in range(len(text))]}

    chars = lambda t: [ord(c) for c in t]  # noqa: E731
    ok = parity_check(tmpl, templates.OLLAMA["chatml"], chars, None, False, chr, Tok(), "sys")
    assert ok["ok"], ok["message"]
    bad = parity_check(tmpl, templates.OLLAMA["chatml"], lambda t: chars(t.replace("user", "usr")), None, False,
                       chr, Tok(), "sys")
    assert not bad["ok"] and bad["first_difference"]["index"] > 0


# -- a tiny Gemma 3 with random weights, a LoRA on it, and an hf tier that serves them ---------------------

def make_tiny_gemma3(root, engine):
    """A tiny Gemma 3 (random weights, Gemma's real tokenizer), a LoRA on it with non-zero B, and a
    tiers file whose tier `tuned` serves them: (base folder, adapter folder, tiers file)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from pet import models

    spec = engine.tiers.spec("enhanced")
    gguf_ref = models.resolve(spec.model, "hf", engine.settings.path("models"))
    tok = AutoTokenizer.from_pretrained(models.hf_folder(gguf_ref, engine.settings.path("cache", "hf")))
    base_dir, adapter_dir = root / "base", root / "adapter"
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                           sliding_window=64)
    Gemma3ForCausalLM(cfg).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    base = Gemma3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                           target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(adapter_dir)
    (adapter_dir / "pet_adapter.json").write_text(json.dumps({"base": {"ref": str(base_dir)},
                                                              "model_type": "gemma3_text"}))
    tiers = root / "tiers.toml"
    tiers.write_text(f"""
[tiers.tuned]
backend = "hf"
model = "{base_dir}"
adapter = "{adapter_dir}"
template = "gemma3"
system_prompt = "You are PET: turn a rough request into a well-built prompt."
[tiers.tuned.params]
temperature = 0.2
top_k = 30
""")
    return base_dir, adapter_dir, tiers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, engine):
    """(engine on a tiers file with tier `tuned` = tiny Gemma 3 + LoRA, base folder, adapter folder)."""
    from pet.config import Settings
    from pet.engine import Engine

    root = tmp_path_factory.mktemp("tiny-gemma3")
    base_dir, adapter_dir, tiers = make_tiny_gemma3(root, engine)
    home = root / "home"
    home.mkdir()
    return Engine(Settings(home=home, tiers_path=tiers)), base_dir, adapter_dir


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    from pet.export import export_ollama

    eng, _, _ = tiny
    out = tmp_path_factory.mktemp("export") / "pet-tuned"
    rec = export_ollama(eng, "tuned", out, dtype="float32", quantize="Q4_K_M")
    return out, rec


@pytest.mark.slow
def test_export_writes_the_folder_ollama_imports(exported, tiny):
    from gguf import GGUFReader

    out, rec = exported
    names = {p.name for p in out.iterdir()}
    assert {"Modelfile", "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
            "lora.gguf", "pet_export.json"} <= names
    assert "adapter_model.safetensors" not in names  # Ollama's importer would take it for the model
    assert not list(out.parent.glob("*.tmp*"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3ForCausalLM"] and "quantization_config" not in cfg
    assert json.loads((out / "tokenizer_config.json").read_text())["add_bos_token"] is True
    mf = (out / "Modelfile").read_text()
    assert "\nFROM .\n" in mf and "ADAPTER" not in mf
    assert f'TEMPLATE """{templates.OLLAMA["gemma3"]}"""' in mf
    assert 'SYSTEM """You are PET: turn a rough request into a well-built prompt."""' in mf
    for line in ("PARAMETER temperature 0.2", "PARAMETER top_k 30", "PARAMETER top_p 0.9", "PARAMETER num_ctx 2048",
                 'PARAMETER stop "<end_of_turn>"'):
        assert line in mf
    assert rec["parity"]["ok"] and rec["quantize"] == "q4_K_M"
    assert rec["pet_side"].startswith("Ollama serves the model without PET's decoding: its loop guard.")
    assert rec["command"] == "ollama create pet-tuned -f Modelfile --quantize q4_K_M"
    for f, digest in rec["files"].items():
        assert digest == "sha256:" + hashlib.sha256((out / f).read_bytes()).hexdigest()
    r = GGUFReader(str(out / "lora.gguf"))
    assert bytes(r.fields["general.type"].parts[-1]).decode() == "adapter"


@pytest.mark.slow
def test_merged_model_gives_the_same_greedy_tokens_as_base_plus_adapter(exported, tiny):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = exported
    _, base_dir, adapter_dir = tiny
    tok = AutoTokenizer.from_pretrained(out)
    prompt = templates.BUILTIN["gemma3"].render([{"role": "user", "content": "write a haiku about tea"}])
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                             adapter_dir).eval()
    with torch.no_grad():
        lm, la = merged(ids).logits[0, -1], with_adapter(ids).logits[0, -1]
        with with_adapter.disable_adapter():
            lb = with_adapter(ids).logits[0, -1]
        assert (la - lb).abs().max() > 1e-2, "the adapter must change the logits, or the test proves nothing"
        assert torch.allclose(lm, la, atol=1e-4)
        g_merged = merged.generate(ids, **kw)[0, ids.shape[1]:].tolist()
        g_adapter = with_adapter.generate(input_ids=ids, **kw)[0, ids.shape[1]:].tolist()
    assert len(g_merged) == 8 and g_merged == g_adapter


@pytest.mark.slow
def test_tokenizer_model_encodes_like_llama_cpp(engine, tmp_path):
    """The SentencePiece file the export writes (Ollama reads Gemma's vocabulary from it)."""
    import sentencepiece as spm

    from pet import models
    from pet.export import write_spm_from_gguf

    spec = engine.tiers.spec("enhanced")
    gguf = models.resolve(spec.model, spec.backend, engine.settings.path("models")).path
    target = write_spm_from_gguf(gguf, tmp_path / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(target))
    assert sp.get_piece_size() == 262144 and sp.id_to_piece(106) == "<end_of_turn>"
    text = "Write a short poem about the sea, café style ☕ — 3 lines, 12 words max.\n\nThen stop."
    assert sp.encode(text) == engine.tokenizer_for("enhanced")(text)


# -- --create: blobs and the create call, against a fake Ollama that records them --------------------------

@pytest.fixture
def fake_ollama():
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    from tests.conftest import free_port

    calls: dict = {"blobs": {}, "create": []}
    app = FastAPI()

    @app.post("/api/blobs/{digest}")
    async def blob(digest: str, request: Request):
        body = await request.body()
        if digest != "sha256:" + hashlib.sha256(body).hexdigest():
            return JSONResponse({"error": "digest mismatch"}, 400)
        calls["blobs"][digest] = len(body)
        return JSONResponse({}, 201)

    @app.post("/api/create")
    async def create(request: Request):
        req = await request.json()
        calls["create"].append(req)
        missing = [f for f, d in req.get("files", {}).items() if d not in calls["blobs"]]
        if missing:
            return JSONResponse({"error": f"missing blobs: {missing}"}, 400)
        lines = [{"status": "converting model"}, {"status": f"quantizing F32 model to {req.get('quantize')}"},
                 {"status": "writing manifest"}, {"status": "success"}]
        return StreamingResponse((json.dumps(x) + "\n" for x in lines), media_type="application/x-ndjson")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        t.join(0.05)
    yield f"http://127.0.0.1:{port}", calls
    server.should_exit = True
    t.join(10)


@pytest.mark.slow
def test_create_uploads_every_file_then_calls_create(exported, fake_ollama):
    from pet.export import create_on_ollama, ollama_parameters

    out, rec = exported
    host, calls = fake_ollama
    spec_params = type("P", (), {"temperature": 0.2, "top_p": 0.9, "top_k": 30, "n_ctx": 2048, "repeat_penalty": 1.1})
    statuses = create_on_ollama(out, rec, templates.OLLAMA["gemma3"], "sys", ollama_parameters(spec_params, ("<end_of_turn>",)),
                                host)
    assert statuses[-1] == "success"
    assert set(calls["blobs"]) == set(rec["files"].values())
    (req,) = calls["create"]
    assert req["model"] == "pet-tuned" and req["files"] == rec["files"] and "from" not in req
    assert req["quantize"] == "q4_K_M" and req["template"] == templates.OLLAMA["gemma3"] and req["system"] == "sys"
    assert req["parameters"]["stop"] == ["<end_of_turn>"] and req["parameters"]["top_k"] == 30
    assert "modelfile" not in req  # the create API no longer takes Modelfile text


@pytest.mark.slow
def test_create_without_a_server_says_the_export_is_done(exported):
    from pet.export import create_on_ollama
    from tests.conftest import free_port

    out, rec = exported
    with pytest.raises(PetError, match=r"no Ollama server answers.*export itself is complete.*ollama create pet-tuned"):
        create_on_ollama(out, rec, "", "", {}, f"http://127.0.0.1:{free_port()}")


def test_cli_rejects_a_bad_quantize_and_a_remote_tier(engine, capsys):
    from pet.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", "ollama", "--tier", "enhanced", "--out", "/tmp/x", "--quantize", "q9_Z"])
    assert e.value.code == 2 and "q4_K_M" in capsys.readouterr().err
    assert main(["export", "ollama", "--tier", "power", "--out", "/tmp/x"]) == 1
    assert "only llama.cpp and hf tiers" in capsys.readouterr().err


def test_export_refuses_a_folder_that_is_not_an_export(engine, tmp_path):
    from pet.export import export_ollama

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(PetError, match="not an earlier PET export"):
        export_ollama(engine, "enhanced", tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_export_buttons_a_finished_run_and_a_tier(tiny):
    """What the Train tab's Export buttons call: a run's adapter on the tier it trained on, or a tier."""
    import shutil

    from pet.export import export_choice
    from pet.train import jobs

    eng, _, adapter_dir = tiny
    run = jobs.runs_dir(eng.settings.home) / "20260101-000000-abcd"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    (run / "config.json").write_text(json.dumps({"tier": "tuned"}))
    shutil.copytree(adapter_dir, run / "adapter")
    rec = export_choice(eng, run_id=run.name, quantize="q8_0")
    assert rec["name"] == f"pet-tuned-{run.name}" and rec["adapter"] == str(run / "adapter")
    assert rec["out"] == str(eng.settings.home / "exports" / rec["name"]) and rec["quantize"] == "q8_0"
    assert (eng.settings.home / "exports" / rec["name"] / "Modelfile").exists()
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": 999999}))
    with pytest.raises(PetError, match="no finished adapter to export"):
        export_choice(eng, run_id=run.name)
    with pytest.raises(PetError, match="model name"):
        export_choice(eng, tier="tuned", name="bad name!")


def test_export_says_which_of_pets_decoding_settings_ollama_will_not_apply():
    """The shipped tiers leave "Avoid:" lines out and guard loops in PET; an Ollama import runs the bare model,
    so the export says what the user's answers will lack there."""
    from pages.export_panel import result_md
    from pet.config import GenParams
    from pet.export import pet_side_note

    note = pet_side_note(GenParams(drop_avoid=True, best_of=3))
    assert note == ("Ollama serves the model without PET's decoding: its loop guard, leaving out its \"Avoid:\" lines, "
                    "best of 3. Served by PET (its Ollama-compatible API included), the tier keeps them.")
    assert pet_side_note(GenParams(loop_guard=False)) == ""
    rec = {"name": "pet-enhanced", "out": "/x", "parity": {"message": "parity ok"}, "command": "ollama create",
           "pet_side": note}
    assert "leaving out its &quot;Avoid:&quot; lines" in result_md(rec)
