"""OpenAI-compatible chat servers as a tier: vLLM, llama.cpp's server, TGI, llama-cpp-python's server,
or PET's own /v1 routes. A team whose tier outgrows one machine points the tier at its cluster.

The tier's `host` is the server's base URL up to and including /v1 (http://gpu-box:8000/v1), `model`
the name the server serves, and `api_key_env` (optional) names the environment variable that holds
the key, so no secret sits in the tiers file. The answer streams as server-sent events and gets the
same timing per chunk as a local tier; the token count is the server's own when it reports usage.
Besides the standard fields PET sends top_k and repeat_penalty, which vLLM and llama.cpp's servers
read and other servers ignore. The server renders the chat template, so the model's own must be right.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from pet.backends.base import Backend, BackendError, Chunk, Clock
from pet.config import GenParams

FINISH = {"stop": "stop", "length": "length", "eos": "stop", "end_turn": "stop"}


def _explain(err: BaseException, base_url: str) -> BackendError:
    import httpx

    if isinstance(err, httpx.ConnectError):
        return BackendError(f"no OpenAI-compatible server answers at {base_url}: start it, or fix the tier's host")
    if isinstance(err, httpx.TimeoutException):
        return BackendError(f"the server at {base_url} timed out: it may be busy or still loading, try again")
    if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError)):
        return BackendError(f"the connection to {base_url} dropped mid-answer: check the server, then retry")
    return BackendError(f"the server at {base_url} failed: {type(err).__name__}: {err}")


def _status_error(status: int, text: str, base_url: str, model: str, key_env: str | None) -> BackendError:
    try:
        err = json.loads(text).get("error", text)
        msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        msg = text.strip()[:300]
    if status in (401, 403):
        where = f"${key_env}" if key_env else "the tier's api_key_env variable"
        return BackendError(f"the server at {base_url} refused the request ({status}): put its key in {where}")
    if status == 404:
        return BackendError(f"the server at {base_url} does not serve model {model!r} ({msg})")
    return BackendError(f"the server at {base_url} answered HTTP {status} for {model!r}: {msg}")


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str | None = None, timeout: float = 300.0):
        if not base_url:
            raise BackendError("an openai tier needs `host`: the server's base URL, e.g. http://127.0.0.1:8000/v1")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self._client = None

    def headers(self) -> dict:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def client(self):
        if self._client is None:
            import httpx

            # One pooled client: httpx clients are thread-safe, and remote requests may overlap.
            self._client = httpx.Client(base_url=self.base_url, headers=self.headers(),
                                        timeout=httpx.Timeout(self.timeout, connect=5.0))
        return self._client

    def models(self, timeout: float = 3.0) -> list[str]:
        """The model ids the server lists (GET /models)."""
        import httpx

        try:
            r = httpx.get(f"{self.base_url}/models", headers=self.headers(), timeout=timeout)
        except httpx.HTTPError as e:
            raise _explain(e, self.base_url) from None
        if r.status_code >= 400:
            raise _status_error(r.status_code, r.text, self.base_url, self.model, self.api_key_env)
        try:
            return [m["id"] for m in r.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BackendError(f"{self.base_url}/models did not answer as an OpenAI-compatible server: "
                               "check the tier's host (it ends in /v1)") from None

    def probe(self, timeout: float = 3.0) -> tuple[bool, str]:
        try:
            ids = self.models(timeout)
        except BackendError as e:
            return False, str(e)
        if ids and self.model not in ids:
            return False, f"the server at {self.base_url} does not serve {self.model!r}; it serves: {', '.join(ids)}"
        return True, ""

    def load(self) -> None:
        ok, why = self.probe()
        if not ok:
            raise BackendError(why)

    def body(self, messages: list[dict], params: GenParams) -> dict:
        body = {"model": self.model, "messages": messages, "stream": True,
                "stream_options": {"include_usage": True}, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
                "repeat_penalty": params.repeat_penalty}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def stream(self, messages: list[dict], params: GenParams) -> Iterator[Chunk]:
        import httpx

        clock, reason, usage = Clock(), "stop", {}
        try:
            with self.client().stream("POST", "/chat/completions", json=self.body(messages, params)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _status_error(r.status_code, r.text, self.base_url, self.model, self.api_key_env)
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments (": ping") and event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        raise BackendError(f"the server at {self.base_url} sent a line that is not JSON: "
                                           f"{data[:120]!r}") from None
                    if obj.get("error"):
                        err = obj["error"]
                        raise BackendError(f"error from {self.base_url} mid-stream for {self.model!r}: "
                                           f"{err.get('message', err) if isinstance(err, dict) else err}")
                    usage = obj.get("usage") or usage
                    for choice in obj.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            yield clock.chunk(text)
                        if choice.get("finish_reason"):
                            reason = FINISH.get(choice["finish_reason"], choice["finish_reason"])
        except BackendError:
            raise
        except httpx.HTTPError as e:
            raise _explain(e, self.base_url) from None
        if usage.get("completion_tokens"):
            clock.tokens = int(usage["completion_tokens"])
        yield clock.last(reason, usage.get("prompt_tokens"))

    def describe(self) -> dict:
        return {"host": self.base_url, "model": self.model}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
