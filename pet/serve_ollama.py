"""PET's tiers over Ollama's HTTP API (and the OpenAI-compatible /v1 routes Ollama also serves).

`python -m pet serve --ollama-port 11434` runs this beside the web app, on the same Engine (the same
loaded models), or alone with `--no-ui`. Clients written for Ollama (the official `ollama` library,
Open WebUI, PET's first browser front end) then talk to PET's tiers unchanged.

- Each tier is listed as `<tier>:latest`; `<tier>`, `pet-<tier>` and `pet-<tier>:latest` (the names
  PET's first version gave its Ollama models) find it too. Any other name answers 404, as Ollama does.
- NDJSON lines while streaming, one object with "stream": false. The last object carries done_reason
  and the timings in nanoseconds. A failure before the first token is an HTTP error {"error": ...};
  one after it is a final {"error": ...} line, which is what Ollama sends (its client raises on it).
- A client that disconnects closes the tier's stream, which releases the model for the next request.
- With --auth / PET_AUTH every route needs `Authorization: Basic base64(USER:PASS)` or
  `Authorization: Bearer PASS`; without it the answer is 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from datetime import datetime, timedelta, timezone

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from pet import PetError, __version__, templates
from pet.backends.base import BackendError
from pet.config import ConfigError, GenParams

DEFAULT_PORT = 11434
API_VERSION = "0.12.0"  # the Ollama API level whose routes and fields this server follows
# Browser pages on this machine may call the API, as Ollama allows by default; PET_OLLAMA_ORIGINS
# (comma-separated, like OLLAMA_ORIGINS) adds more.
LOCAL_ORIGINS = (r"^(https?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(:\d+)?"
                 r"|app://.*|file://.*|tauri://.*|null)$")
# Ollama's own options that PET maps onto a tier's generation settings; other options are ignored.
OPTION_NAMES = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
                "num_predict": "max_new_tokens", "num_ctx": "n_ctx", "repeat_penalty": "repeat_penalty",
                "stop": "stop"}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


class Service:
    """What the routes do, without the HTTP: name lookup, options, and the answer as a stream of dicts."""

    def __init__(self, engine):
        self.engine = engine
        self.started = now_iso()

    # -- names ------------------------------------------------------------------------------------
    def tier(self, name) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "model is required")
        base, _, tag = name.strip().partition(":")
        names = self.engine.tiers.names()
        if tag in ("", "latest"):
            for cand in (base, base[4:] if base.startswith("pet-") else None):
                if cand and cand in names:
                    return cand
        raise ApiError(404, f"model \"{name}\" not found, try pulling it first "
                            f"(PET serves its tiers: {', '.join(n + ':latest' for n in names)})")

    def _status(self, tier: str) -> dict:
        return self.engine.tiers.status(tier, probe=True)

    def details(self, tier: str, status: dict | None = None) -> dict:
        spec = self.engine.tiers.spec(tier)
        status = status or self._status(tier)
        path = status.get("model_path") or ""
        quant = re.search(r"(I?Q\d_[A-Z0-9_]+|Q\d_\d|F16|F32|BF16)", os.path.basename(path), re.I)
        fam = spec.template if spec.template in templates.BUILTIN else ""
        loaded = self.engine.tiers.loaded(tier)
        if loaded is not None and getattr(loaded, "template", None) is not None:
            fam = templates.family_of(loaded.template.source) or fam
        return {"parent_model": "", "format": "gguf" if path.endswith(".gguf") else spec.backend,
                "family": fam, "families": [fam] if fam else None, "parameter_size": "",
                "quantization_level": quant.group(1).upper() if quant else ""}

    def _size(self, status: dict) -> int:
        size = 0
        for p in (status.get("model_path"), os.path.join(status.get("adapter") or "", "adapter.gguf")):
            if p and os.path.isfile(p):
                size += os.path.getsize(p)
        return size

    def digest(self, tier: str) -> str:
        spec = self.engine.tiers.spec(tier)
        ident = json.dumps([spec.backend, spec.model, spec.adapter, spec.system_prompt, spec.template,
                            spec.params.as_dict()], sort_keys=True, default=list)
        return hashlib.sha256(ident.encode()).hexdigest()

    def tags(self) -> dict:
        models = []
        for tier in self.engine.tiers.names():
            st = self._status(tier)
            if not st["available"]:
                continue  # Ollama lists what it can run; `python -m pet tiers` says why a tier cannot
            models.append({"name": f"{tier}:latest", "model": f"{tier}:latest", "modified_at": self.started,
                           "size": self._size(st), "digest": self.digest(tier), "details": self.details(tier, st)})
        return {"models": models}

    def ps(self) -> dict:
        out = []
        for tier in self.engine.tiers.names():
            b = self.engine.tiers.loaded(tier)
            if b is None:
                continue
            st = self.engine.tiers.status(tier, probe=False)
            forever = datetime.now(timezone.utc) + timedelta(days=365 * 100)  # PET keeps a loaded tier loaded
            out.append({"name": f"{tier}:latest", "model": f"{tier}:latest", "size": self._size(st),
                        "digest": self.digest(tier), "details": self.details(tier, st),
                        "expires_at": forever.strftime("%Y-%m-%dT%H:%M:%SZ"), "size_vram": 0,
                        "context_length": getattr(b, "n_ctx", None) or self.engine.tiers.spec(tier).params.n_ctx})
        return {"models": out}

    def show(self, name) -> dict:
        tier = self.tier(name)
        spec = self.engine.tiers.spec(tier)
        st = self._status(tier)
        details = self.details(tier, st)
        go = templates.OLLAMA.get(details["family"], "")
        params = spec.params
        lines = [f"temperature {params.temperature}", f"top_p {params.top_p}", f"top_k {params.top_k}",
                 f"num_ctx {params.n_ctx}", f"num_predict {params.max_new_tokens}",
                 f"repeat_penalty {params.repeat_penalty}"]
        tmpl = templates.BUILTIN.get(details["family"])
        lines += [f'stop "{s}"' for s in (tmpl.stop if tmpl else ())]
        modelfile = "\n".join([f"# Served by PET Studio {__version__}: tier {tier} ({spec.backend})",
                               f"FROM {spec.model}"] + ([f"# adapter {spec.adapter}"] if spec.adapter else [])
                              + [f'TEMPLATE """{go}"""' if go else "", f'SYSTEM """{spec.system_prompt}"""']
                              + [f"PARAMETER {x}" for x in lines])
        return {"modelfile": modelfile, "parameters": "\n".join(lines), "template": go,
                "system": spec.system_prompt, "details": details,
                "model_info": {"general.architecture": details["family"] or spec.backend,
                               "general.basename": tier, "pet.backend": spec.backend, "pet.model": spec.model,
                               "pet.adapter": spec.adapter, "pet.available": st["available"],
                               "pet.reason": st["reason"]},
                "capabilities": ["completion"], "modified_at": self.started}

    # -- requests ---------------------------------------------------------------------------------
    def params(self, tier: str, options) -> GenParams:
        base = self.engine.tiers.spec(tier).params
        if options is None:
            return base
        if not isinstance(options, dict):
            raise ApiError(400, "options must be an object")
        kw = {}
        for key, field in OPTION_NAMES.items():
            if options.get(key) is None:
                continue
            val = options[key]
            if key == "stop":
                val = [val] if isinstance(val, str) else val
                if not isinstance(val, list):
                    raise ApiError(400, "options.stop: must be a list of strings")
                val = tuple(val)
            elif isinstance(val, bool) or not isinstance(val, (int, float)):
                raise ApiError(400, f"options.{key}: must be a number, got {val!r}")
            kw[field] = val
        n_ctx = int(kw.get("n_ctx", base.n_ctx))
        if "max_new_tokens" in kw and kw["max_new_tokens"] < 0:
            kw["max_new_tokens"] = n_ctx  # Ollama: -1 = until the context is full, -2 = fill it
        if isinstance(kw.get("max_new_tokens"), (int, float)):
            kw["max_new_tokens"] = min(int(kw["max_new_tokens"]), n_ctx)
        for k in ("top_k", "seed", "n_ctx"):
            if k in kw:
                kw[k] = int(kw[k])
        if kw.get("top_p") == 0:
            kw["top_p"] = 1.0  # Ollama treats 0 as "off"; PET's setting is (0, 1]
        try:
            return base.with_overrides(**kw)
        except ConfigError as e:
            inverse = {v: k for k, v in OPTION_NAMES.items()}
            raise ApiError(400, "; ".join(
                f"options.{inverse.get(p.split(': ')[0].split('.')[-1], p.split(': ')[0])}: {p.partition(': ')[2]}"
                for p in e.problems)) from None

    @staticmethod
    def check_unsupported(body: dict, fields: tuple[str, ...]) -> None:
        for f in fields:
            if body.get(f):
                raise ApiError(400, f"{f} is not supported by PET's tiers")

    @staticmethod
    def messages(raw) -> list[dict]:
        if not isinstance(raw, list):
            raise ApiError(400, "messages must be a list of {role, content} objects")
        msgs = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict):
                raise ApiError(400, f"messages[{i}]: must be an object with role and content")
            if m.get("images"):
                raise ApiError(400, f"messages[{i}].images: PET's tiers read text only")
            if m.get("role") not in ("system", "user", "assistant"):
                raise ApiError(400, f"messages[{i}].role: must be system, user or assistant, got {m.get('role')!r}")
            content = m.get("content") or ""
            if not isinstance(content, str):
                raise ApiError(400, f"messages[{i}].content: must be text")
            msgs.append({"role": m["role"], "content": content})
        try:
            templates.check_messages(msgs)
        except PetError as e:
            raise ApiError(400, str(e)) from None
        return msgs

    def load(self, tier: str) -> float:
        """Load the tier if it is not loaded; returns the seconds it took (0 when it was loaded)."""
        if self.engine.tiers.loaded(tier) is not None:
            return 0.0
        t0 = time.perf_counter()
        try:
            self.engine.tiers.backend(tier)
        except PetError as e:
            raise ApiError(500, str(e)) from None
        return time.perf_counter() - t0

    def unload(self, tier: str) -> None:
        if self.engine.tiers.loaded(tier) is not None:
            self.engine.tiers.put(self.engine.tiers.spec(tier))  # drops the backend; the next request reloads

    def answer(self, tier: str, messages: list[dict], params: GenParams, system: str | None,
               started: float, load_s: float) -> Iterator[dict]:
        """The answer as dicts: {"text": ...} per chunk, then one {"done": True, ...stats}."""
        last = None
        for ch in self.engine.stream(tier, messages, params, system=system):
            last = ch
            if ch.text:
                yield {"text": ch.text}
        if last is None:
            raise BackendError("the tier returned no answer")
        reason = last.finish_reason if last.finish_reason in ("stop", "length") else "stop"
        yield {"done": True, "done_reason": reason, "total_duration": ns(time.perf_counter() - started),
               "load_duration": ns(load_s), "prompt_eval_count": last.prompt_tokens or 0,
               "prompt_eval_duration": ns(last.ttft_s), "eval_count": last.tokens,
               "eval_duration": ns(last.elapsed_s - last.ttft_s)}


def _check_auth(header: str, auth: tuple[str, str]) -> bool:
    user, pw = auth
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given.encode(), f"{user}:{pw}".encode())
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), pw.encode()) or \
            hmac.compare_digest(value.encode(), f"{user}:{pw}".encode())
    return False


# -- the HTTP side: module-level helpers and one function per route; create_app puts them together ---------
_END = object()


def _next(gen):
    try:
        return next(gen)
    except StopIteration:
        return _END


async def in_thread(gen: Iterator, first=_END):
    """Drive a blocking generator from a worker thread; closing this closes it (and frees the model)."""
    try:
        if first is not _END:
            yield first
        while True:
            item = await anyio.to_thread.run_sync(_next, gen)
            if item is _END:
                return
            yield item
    finally:
        gen.close()


class ClosingStream(StreamingResponse):
    # Starlette stops reading the body iterator when the client goes away but does not close it;
    # closing it here runs the tier's cleanup (its lock is released) at once, not at garbage collection.
    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


def error(status: int, message: str, openai: bool = False):
    if openai:
        kind = {404: "not_found_error", 401: "authentication_error"}.get(status, "invalid_request_error"
                                                                           if status < 500 else "server_error")
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status)
    return JSONResponse({"error": message}, status)


async def _api_error(request: Request, e: ApiError):
    return error(e.status, e.message, request.url.path.startswith("/v1/"))


async def _unexpected(request: Request, e: Exception):  # a client still gets Ollama's {"error"} shape
    return error(500, f"unexpected {type(e).__name__}: {e}", request.url.path.startswith("/v1/"))


async def body_of(request: Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _service(request: Request) -> Service:
    return request.app.state.service


async def start(svc: Service, tier: str, msgs: list[dict], params: GenParams, system: str | None):
    """Load the tier and produce the first item before any header is sent, so a failure there
    (a tier that cannot load, a conversation longer than the context) is a plain HTTP error."""
    started = time.perf_counter()
    load_s = await anyio.to_thread.run_sync(svc.load, tier)
    gen = svc.answer(tier, msgs, params, system, started, load_s)
    try:
        first = await anyio.to_thread.run_sync(_next, gen)
    except BackendError as e:
        gen.close()
        raise ApiError(500, str(e)) from None
    except PetError as e:
        gen.close()
        raise ApiError(400, str(e)) from None
    except Exception:
        gen.close()
        raise
    return first, gen


async def relay(first, gen, shape, stream: bool, request: Request):
    """Stream `shape(item)` lines (NDJSON) or collect them into one object."""
    if stream:
        async def lines():
            try:
                async with aclosing(in_thread(gen, first)) as items:
                    async for it in items:
                        yield json.dumps(shape(it), ensure_ascii=False) + "\n"
            except PetError as e:  # mid-stream: Ollama's error line
                yield json.dumps({"error": str(e)}, ensure_ascii=False) + "\n"
            except Exception as e:  # noqa: BLE001 - the client must still see why the stream ended
                yield json.dumps({"error": f"unexpected {type(e).__name__}: {e}"}, ensure_ascii=False) + "\n"

        return ClosingStream(lines(), media_type="application/x-ndjson")
    text, final = [], {}
    try:
        async with aclosing(in_thread(gen, first)) as items:
            async for it in items:
                if await request.is_disconnected():
                    break  # the client is gone: closing the stream frees the model
                if "text" in it:
                    text.append(it["text"])
                else:
                    final = it
    except PetError as e:
        raise ApiError(500, str(e)) from None
    return JSONResponse(shape({"text": "".join(text), **final}))


def stats_keys(it: dict) -> dict:
    return {k: v for k, v in it.items() if k != "text"}


async def load_or_unload(svc: Service, tier: str, name, key: str, keep_alive) -> dict:
    """A request with nothing to answer loads the model, or unloads it with keep_alive 0 (as Ollama does)."""
    reason = "unload" if keep_alive in (0, "0", "0s") else "load"
    await anyio.to_thread.run_sync(svc.unload if reason == "unload" else svc.load, tier)
    reply = {"model": name, "created_at": now_iso(), "done": True, "done_reason": reason}
    reply[key] = {"role": "assistant", "content": ""} if key == "message" else ""
    return reply


# -- Ollama routes ---------------------------------------------------------------------------------------
async def root():
    return PlainTextResponse("Ollama is running")


async def version():
    return {"version": API_VERSION, "pet_version": __version__}


async def tags(request: Request):
    return await anyio.to_thread.run_sync(_service(request).tags)


async def ps(request: Request):
    return await anyio.to_thread.run_sync(_service(request).ps)


async def show(request: Request):
    body = await body_of(request)
    return await anyio.to_thread.run_sync(_service(request).show, body.get("model") or body.get("name"))


async def _open(request: Request, unsupported: tuple[str, ...]):
    """What every generating route starts with: the service, the body, the model name asked for and its tier,
    with the fields this route cannot honour refused."""
    svc, body = _service(request), await body_of(request)
    name = body.get("model")
    tier = svc.tier(name)
    svc.check_unsupported(body, unsupported)
    return svc, body, name, tier


async def chat(request: Request):
    svc, body, name, tier = await _open(request, ("tools", "format"))
    msgs = svc.messages(body.get("messages") or [])
    params = svc.params(tier, body.get("options"))
    if not msgs:
        return await load_or_unload(svc, tier, name, "message", body.get("keep_alive"))
    first, gen = await start(svc, tier, msgs, params, None)

    def shape(it: dict) -> dict:
        out = {"model": name, "created_at": now_iso(),
               "message": {"role": "assistant", "content": it.get("text", "")}, "done": bool(it.get("done"))}
        return {**out, **stats_keys(it)} if it.get("done") else out

    return await relay(first, gen, shape, body.get("stream", True) is not False, request)


async def generate(request: Request):
    svc, body, name, tier = await _open(request, ("raw", "template", "suffix", "images", "format"))
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be text")
    system = body.get("system") or None
    params = svc.params(tier, body.get("options"))
    if not prompt:
        return await load_or_unload(svc, tier, name, "response", body.get("keep_alive"))
    first, gen = await start(svc, tier, [{"role": "user", "content": prompt}], params, system)

    def shape(it: dict) -> dict:
        out = {"model": name, "created_at": now_iso(), "response": it.get("text", ""),
               "done": bool(it.get("done"))}
        return {**out, **stats_keys(it)} if it.get("done") else out

    return await relay(first, gen, shape, body.get("stream", True) is not False, request)


# -- OpenAI-compatible routes (Ollama serves these too) ---------------------------------------------------
async def v1_models(request: Request):
    listed = await anyio.to_thread.run_sync(_service(request).tags)
    return {"object": "list", "data": [{"id": m["name"], "object": "model", "created": int(time.time()),
                                        "owned_by": "pet-studio"} for m in listed["models"]]}


def _v1_options(body: dict) -> dict:
    """OpenAI's sampling fields under Ollama's option names."""
    return {"temperature": body.get("temperature"), "top_p": body.get("top_p"), "seed": body.get("seed"),
            "num_predict": body.get("max_completion_tokens") or body.get("max_tokens"),
            "stop": body.get("stop"), "top_k": body.get("top_k"), "repeat_penalty": body.get("repeat_penalty")}


def _v1_usage(it: dict) -> dict:
    return {"prompt_tokens": it["prompt_eval_count"], "completion_tokens": it["eval_count"],
            "total_tokens": it["prompt_eval_count"] + it["eval_count"]}


async def v1_chat(request: Request):
    svc, body, name, tier = await _open(request, ("tools", "response_format"))
    msgs = svc.messages(body.get("messages") or [])
    if not msgs:
        raise ApiError(400, "messages must not be empty")
    params = svc.params(tier, _v1_options(body))
    first, gen = await start(svc, tier, msgs, params, None)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
    if body.get("stream") is not True:
        resp = await relay(first, gen, lambda it: it, False, request)
        it = json.loads(resp.body)
        return {"id": cid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": it["text"]},
                             "finish_reason": it.get("done_reason", "stop")}],
                "usage": _v1_usage(it) if it.get("done") else None}
    return ClosingStream(_v1_events(first, gen, {"id": cid, "created": created, "model": name}, usage_wanted),
                         media_type="text/event-stream")


async def _v1_events(first, gen, ident: dict, usage_wanted: bool):
    """Server-sent events: a role chunk, a chunk per text, the finish chunk (and usage), then [DONE]."""
    def chunk(delta: dict, finish: str | None = None) -> str:
        obj = {"id": ident["id"], "object": "chat.completion.chunk", "created": ident["created"],
               "model": ident["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async with aclosing(in_thread(gen, first)) as items:
            async for it in items:
                if "text" in it:
                    yield chunk({"content": it["text"]})
                    continue
                yield chunk({}, it["done_reason"])
                if usage_wanted:
                    obj = {"id": ident["id"], "object": "chat.completion.chunk", "created": ident["created"],
                           "model": ident["model"], "choices": [], "usage": _v1_usage(it)}
                    yield f"data: {json.dumps(obj)}\n\n"
    except PetError as e:
        yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
    yield "data: [DONE]\n\n"


# (path, methods, handler) in the order they are registered: "/" answers HEAD as well as GET, like Ollama.
ROUTES = (("/", ["HEAD"], root), ("/", ["GET"], root), ("/api/version", ["GET"], version),
          ("/api/tags", ["GET"], tags), ("/api/ps", ["GET"], ps), ("/api/show", ["POST"], show),
          ("/api/chat", ["POST"], chat), ("/api/generate", ["POST"], generate), ("/v1/models", ["GET"], v1_models),
          ("/v1/chat/completions", ["POST"], v1_chat))


class _Auth:
    """Every route needs the credentials (HTTP basic, or a bearer token); else 401 in the route's error shape."""

    def __init__(self, app_, auth: tuple[str, str]):
        self.app = app_
        self.auth = auth

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not _check_auth(header, self.auth):
                v1 = scope.get("path", "").startswith("/v1/")
                resp = error(401, "unauthorized: this PET server needs credentials (HTTP basic "
                                  "USER:PASS, or `Authorization: Bearer PASS`)", v1)
                resp.headers["WWW-Authenticate"] = 'Basic realm="PET Studio", Bearer'
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(engine, auth: tuple[str, str] | None = None, origins: list[str] | None = None):
    """The FastAPI app: Ollama's /api routes and OpenAI-compatible /v1 routes over the engine's tiers."""
    app = FastAPI(title="PET Studio: Ollama-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = Service(engine)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(Exception, _unexpected)
    for path, methods, handler in ROUTES:
        app.add_api_route(path, handler, methods=methods)
    if auth:
        app.add_middleware(_Auth, auth=auth)
    extra = [o.strip() for o in (origins if origins is not None else
                                 os.environ.get("PET_OLLAMA_ORIGINS", "").split(",")) if o.strip()]
    # Added last, so it is the outermost layer: a browser's preflight is answered before auth is asked.
    app.add_middleware(CORSMiddleware, allow_origin_regex=LOCAL_ORIGINS, allow_origins=extra,
                       allow_methods=["*"], allow_headers=["*"])
    return app


class OllamaServer:
    """The API on its own port, in a thread beside the web app or in the foreground (--no-ui)."""

    def __init__(self, engine, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 auth: tuple[str, str] | None = None):
        import uvicorn

        self.host, self.port = host, port
        self.app = create_app(engine, auth)
        level = "info" if os.environ.get("PET_DEBUG") else "warning"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level=level, access_log=bool(
            os.environ.get("PET_DEBUG")), timeout_graceful_shutdown=2))
        self.thread: threading.Thread | None = None
        self.sock = self._bind()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            hint = " (is Ollama itself running there?)" if self.port == DEFAULT_PORT else ""
            raise PetError(f"cannot serve the Ollama API on {self.host}:{self.port}: {e.strerror}{hint}; "
                           "choose another port with --ollama-port") from None
        self.port = sock.getsockname()[1]
        return sock

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> OllamaServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="pet-ollama-api", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise PetError(f"the Ollama API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.sock])  # in the main thread: Ctrl-C stops it

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()
