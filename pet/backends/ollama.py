"""Ollama backend, through the official `ollama` client.

Every failure the client can raise (server down, model not pulled, an error mid-stream,
a dropped connection) becomes a BackendError whose message says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator

from pet.backends.base import Backend, BackendError, Chunk, Clock
from pet.config import GenParams

DEFAULT_HOST = "http://127.0.0.1:11434"


def explain(err: BaseException, model: str, host: str) -> BackendError:
    """Map an exception from the ollama client (or httpx under it) to a message a user can act on."""
    import httpx
    import ollama

    if isinstance(err, ollama.ResponseError):
        text = str(err.error)
        if err.status_code == 404 or "not found" in text.lower():
            return BackendError(f"Ollama at {host} does not have model {model!r}: run `ollama pull {model}`")
        if err.status_code in (401, 403):
            return BackendError(f"Ollama at {host} refused the request ({err.status_code}): check its access settings")
        where = f"HTTP {err.status_code}" if err.status_code and err.status_code > 0 else "mid-stream"
        return BackendError(f"Ollama error from {host} ({where}) for {model!r}: {text}")
    if isinstance(err, (ConnectionError, httpx.ConnectError)):
        return BackendError(f"no Ollama server answers at {host}: start one with `ollama serve` "
                            "(or set the tier's host / OLLAMA_HOST)")
    if isinstance(err, httpx.TimeoutException):
        return BackendError(f"Ollama at {host} timed out: the model may still be loading, try again")
    if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError)):
        return BackendError(f"the connection to Ollama at {host} dropped mid-answer: check the server, then retry")
    if isinstance(err, ollama.RequestError):
        return BackendError(f"bad request to Ollama: {err.error}")
    return BackendError(f"Ollama ({host}) failed: {type(err).__name__}: {err}")


class OllamaBackend(Backend):
    name = "ollama"
    remote = True

    def __init__(self, model: str, host: str | None = None, timeout: float = 300.0):
        self.model = model
        self.host = host or DEFAULT_HOST
        self.timeout = timeout
        self._client = None

    def client(self):
        if self._client is None:
            try:
                import ollama
            except ImportError:
                raise BackendError("the `ollama` package is not installed: run `pip install ollama`")
            self._client = ollama.Client(host=self.host, timeout=self.timeout)
        return self._client

    def probe(self, timeout: float = 1.5) -> tuple[bool, str]:
        """Is the server up and the model there? Cheap: one short request."""
        import ollama

        try:
            ollama.Client(host=self.host, timeout=timeout).show(self.model)
        except Exception as e:  # every client failure maps to a reason
            return False, str(explain(e, self.model, self.host))
        return True, ""

    def models(self) -> list[str]:
        """The model names the server has (GET /api/tags)."""
        try:
            return [m.model for m in self.client().list().models]
        except Exception as e:  # every client failure maps to a reason
            raise explain(e, self.model, self.host) from None

    def load(self) -> None:
        ok, why = self.probe()
        if not ok:
            raise BackendError(why)

    def options(self, params: GenParams) -> dict:
        opts = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
                "num_ctx": params.n_ctx, "num_predict": params.max_new_tokens,
                "repeat_penalty": params.repeat_penalty}
        if params.seed is not None:
            opts["seed"] = params.seed
        if params.stop:
            opts["stop"] = list(params.stop)
        return opts

    def stream(self, messages: list[dict], params: GenParams) -> Iterator[Chunk]:
        clock = Clock()
        try:
            parts = self.client().chat(model=self.model, messages=messages, stream=True,
                                       options=self.options(params))
            final = None
            for part in parts:
                text = part["message"]["content"] if part.get("message") else ""
                if text:
                    yield clock.chunk(text)
                if part.get("done"):
                    final = part
        except BackendError:
            raise
        except Exception as e:  # map every client/transport failure
            raise explain(e, self.model, self.host) from None
        if final is not None and final.get("eval_count"):
            clock.tokens = int(final["eval_count"])
        yield clock.last((final or {}).get("done_reason") or "stop", (final or {}).get("prompt_eval_count"))

    def describe(self) -> dict:
        return {"host": self.host, "model": self.model}
