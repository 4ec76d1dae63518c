"""One HTTP call to an LLM vendor, in that vendor's documented wire format.

- openai: POST {base}/chat/completions (OpenAI, vLLM, llama.cpp, LM Studio,
  Ollama's /v1), bearer auth, ``response_format: {"type": "json_object"}``.
- claude: POST {base}/v1/messages, ``x-api-key`` and ``anthropic-version`` headers.
- ollama: POST {base}/api/chat with ``format: "json"`` and ``stream: false``.

Failures become `CallError`s that say whether another try may succeed, so the
lane above can retry, back off, fail over or give up without knowing vendors.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from vcf_agent.config import ProviderSettings

from ._prompt import MalformedAnswer, Prompt

ANTHROPIC_VERSION = "2023-06-01"

# 408 timeout, 409 lock conflict, 425 too early, 5xx, and Anthropic's 529 overloaded.
_RETRYABLE_STATUS = frozenset({408, 409, 425, 500, 502, 503, 504, 529})

CONNECTIONS_PER_CLIENT = 8


class CallError(Exception):
    """A provider call failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, code: str) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


class RateLimited(CallError):
    """HTTP 429: slow down for `retry_after` seconds (None when the server did not say)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, retryable=True, code="rate_limited")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0


class Wire(Protocol):
    """A vendor's request shape, response shape and error body."""

    def path(self) -> str: ...

    def headers(self, settings: ProviderSettings) -> dict[str, str]: ...

    def body(self, settings: ProviderSettings, prompt: Prompt) -> dict[str, Any]: ...

    def completion(self, data: Any) -> Completion:
        """Raises KeyError/TypeError/IndexError/ValueError on an unexpected shape."""
        ...

    def error_message(self, data: Any) -> str: ...


def _chat_messages(prompt: Prompt) -> list[dict[str, str]]:
    """System and user turns, as both OpenAI-compatible servers and Ollama take them."""
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]


def _bearer(settings: ProviderSettings) -> dict[str, str]:
    return {"authorization": f"Bearer {settings.api_key.reveal()}"} if settings.api_key else {}


class OpenAIWire:
    def path(self) -> str:
        return "/chat/completions"

    def headers(self, settings: ProviderSettings) -> dict[str, str]:
        # Local OpenAI-compatible servers need no key, so none is sent when none is set.
        return _bearer(settings)

    def body(self, settings: ProviderSettings, prompt: Prompt) -> dict[str, Any]:
        return {
            "model": settings.model,
            "messages": _chat_messages(prompt),
            "response_format": {"type": "json_object"},
            "temperature": 0,
            "max_tokens": settings.max_tokens,
            "stream": False,
        }

    def completion(self, data: Any) -> Completion:
        content = data["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("message.content is not a string")
        usage = data.get("usage") or {}
        return Completion(content, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    def error_message(self, data: Any) -> str:
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            return f"{error.get('type') or error.get('code') or 'error'}: {error.get('message', '')}"
        return str(error or data)


class ClaudeWire:
    def path(self) -> str:
        return "/v1/messages"

    def headers(self, settings: ProviderSettings) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key.reveal()
        return headers

    def body(self, settings: ProviderSettings, prompt: Prompt) -> dict[str, Any]:
        return {
            "model": settings.model,
            "max_tokens": settings.max_tokens,
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
            "temperature": 0,
            "stream": False,
        }

    def completion(self, data: Any) -> Completion:
        texts = [block["text"] for block in data["content"] if block.get("type") == "text"]
        if not texts:
            raise ValueError("no text block in content")
        usage = data.get("usage") or {}
        return Completion(
            "".join(texts), int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        )

    def error_message(self, data: Any) -> str:
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            return f"{error.get('type', 'error')}: {error.get('message', '')}"
        return str(data)


class OllamaWire:
    def path(self) -> str:
        return "/api/chat"

    def headers(self, settings: ProviderSettings) -> dict[str, str]:
        # Ollama has no auth of its own; a key is for a reverse proxy in front of it.
        return _bearer(settings)

    def body(self, settings: ProviderSettings, prompt: Prompt) -> dict[str, Any]:
        return {
            "model": settings.model,
            "messages": _chat_messages(prompt),
            "format": "json",
            "stream": False,
            "options": {"temperature": 0, "num_predict": settings.max_tokens},
        }

    def completion(self, data: Any) -> Completion:
        content = data["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("message.content is not a string")
        return Completion(content, int(data.get("prompt_eval_count", 0)), int(data.get("eval_count", 0)))

    def error_message(self, data: Any) -> str:
        return str(data.get("error", data)) if isinstance(data, dict) else str(data)


WIRES: dict[str, Wire] = {"openai": OpenAIWire(), "claude": ClaudeWire(), "ollama": OllamaWire()}


class LLMProvider:
    """An httpx client for one configured endpoint; `complete` is one attempt, no retries."""

    def __init__(self, settings: ProviderSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self._wire = WIRES[settings.kind]
        self._url = settings.base_url.rstrip("/") + self._wire.path()
        self._headers = {"content-type": "application/json", **self._wire.headers(settings)}
        self._transport = transport
        self._clients: list[httpx.AsyncClient] = []

    async def start(self) -> None:
        limit = self.settings.max_concurrency
        # httpcore's pool does work quadratic in its connections for every request, so
        # a few small pools are much cheaper than one pool of `max_concurrency`.
        for first in range(0, limit, CONNECTIONS_PER_CLIENT):
            size = min(CONNECTIONS_PER_CLIENT, limit - first)
            self._clients.append(
                httpx.AsyncClient(
                    timeout=httpx.Timeout(self.settings.timeout_s),
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                    transport=self._transport,
                    # A proxy from the environment would silently reroute model traffic.
                    trust_env=False,
                )
            )

    async def stop(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    async def complete(self, prompt: Prompt, channel: int = 0) -> Completion:
        """One call; `channel` (0..max_concurrency-1, one per concurrent caller) picks the connection pool."""
        if not self._clients:
            raise CallError(f"{self.name}: provider not started", retryable=False, code="not_started")
        client = self._clients[(channel // CONNECTIONS_PER_CLIENT) % len(self._clients)]
        body = self._wire.body(self.settings, prompt)
        try:
            response = await client.post(self._url, headers=self._headers, json=body)
        except httpx.TimeoutException as exc:
            raise CallError(
                f"{self.name}: timed out after {self.settings.timeout_s}s", retryable=True, code="timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise CallError(
                f"{self.name}: {type(exc).__name__}: {exc}", retryable=True, code="connection"
            ) from exc
        if response.status_code == 429:
            raise RateLimited(
                f"{self.name}: 429 {self._error_text(response)}",
                retry_after(response.headers.get("retry-after")),
            )
        if response.status_code >= 400:
            raise CallError(
                f"{self.name}: HTTP {response.status_code} {self._error_text(response)}",
                retryable=response.status_code in _RETRYABLE_STATUS,
                code=f"http_{response.status_code}",
            )
        try:
            return self._wire.completion(response.json())
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            # A broken envelope is handled like a malformed answer: one more try, then a failure.
            raise MalformedAnswer(
                f"{self.name}: unexpected response body ({type(exc).__name__}: {exc})"
            ) from exc

    def _error_text(self, response: httpx.Response) -> str:
        try:
            message = self._wire.error_message(response.json())
        except ValueError:
            message = response.text
        return message[:300]


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
