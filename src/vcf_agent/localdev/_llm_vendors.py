"""Simulated LLM vendors: loopback HTTP servers that speak each vendor's documented wire format.

The one simulation of the third-party LLM APIs (OpenAI, Anthropic, Ollama), used by the router
tests and by `vcf-agent bench providers`. They check requests the way the real APIs do (path,
auth header, required fields, streaming off) and answer with the vendors' success and error
envelopes, so the client code under test is the code that would talk to the real vendors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from vcf_agent.lifecycle import AsyncComponent

Vendor = Literal["openai", "claude", "ollama"]

# The key a simulated vendor expects unless given another; never a real key.
SIMULATED_API_KEY = "sk-test-4f1c9e0a-do-not-log"

# A well-formed classification answer, what a vendor's model returns as the message content.
SIMULATED_ANSWER = json.dumps(
    {
        "classification": "likely_pathogenic",
        "criteria": ["PVS1: stop gained in a loss-of-function gene", "PM2: absent from gnomAD"],
        "rationale": "Predicted loss of function in a gene where that is a known disease mechanism.",
        "confidence": 0.8,
    }
)

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
_PATHS = {"openai": "/v1/chat/completions", "claude": "/v1/messages", "ollama": "/api/chat"}


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Never answer: the client's timeout is what ends the request.
    hang: bool = False
    delay_s: float = 0.0


Script = Callable[["SimulatedVendor", Seen], Reply]


def answering(content: str = SIMULATED_ANSWER, *, delay_s: float = 0.0) -> Script:
    """Every valid request succeeds with `content`, after `delay_s` (a model's latency)."""

    def reply(vendor: SimulatedVendor, seen: Seen) -> Reply:
        success = vendor.success(content)
        success.delay_s = delay_s
        return success

    return reply


class SimulatedVendor(AsyncComponent):
    """An HTTP/1.1 server on 127.0.0.1 for one vendor; `script` decides each reply.

    Every request is kept in `requests` (the tests read what the client sent).
    """

    def __init__(
        self, vendor: Vendor, script: Script | None = None, *, api_key: str = SIMULATED_API_KEY
    ) -> None:
        self.vendor = vendor
        self.script = script or answering()
        self.api_key = api_key
        self.requests: list[Seen] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        # OpenAI clients are configured with the /v1 prefix; the others with the bare origin.
        suffix = "/v1" if self.vendor == "openai" else ""
        return f"http://127.0.0.1:{self.port}{suffix}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    def success(self, content: str, input_tokens: int = 120, output_tokens: int = 45) -> Reply:
        """The vendor's non-streaming success envelope around `content`."""
        if self.vendor == "openai":
            data: dict[str, Any] = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "gpt-test",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            }
        elif self.vendor == "claude":
            data = {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": "claude-test",
                "content": [{"type": "text", "text": content}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        else:
            data = {
                "model": "llama-test",
                "created_at": "2024-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": content},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": input_tokens,
                "eval_count": output_tokens,
            }
        return Reply(200, json.dumps(data).encode(), {"content-type": "application/json"})

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        """The vendor's error body for `status`."""
        if self.vendor == "openai":
            kind = {429: "rate_limit_exceeded", 401: "invalid_request_error"}.get(status, "server_error")
            data: dict[str, Any] = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        elif self.vendor == "claude":
            kind = {
                400: "invalid_request_error",
                401: "authentication_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            data = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            data = {"error": message}
        return Reply(
            status, json.dumps(data).encode(), {"content-type": "application/json", **(headers or {})}
        )

    def _check(self, seen: Seen) -> Reply | None:
        """What the real API does with a request it rejects; None when the request is valid."""
        if seen.method != "POST" or seen.path != _PATHS[self.vendor]:
            return self.error(404, f"no route {seen.method} {seen.path}")
        if self.vendor == "openai" and seen.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(401, "Incorrect API key provided")
        if self.vendor == "claude":
            if seen.headers.get("x-api-key") != self.api_key:
                return self.error(401, "invalid x-api-key")
            if not seen.headers.get("anthropic-version"):
                return self.error(400, "anthropic-version: header is required")
        body = seen.body
        if not isinstance(body, dict) or not body.get("model") or not body.get("messages"):
            return self.error(400, "model and messages are required")
        if self.vendor == "claude" and not isinstance(body.get("max_tokens"), int):
            return self.error(400, "max_tokens: Field required")
        # Ollama streams unless told not to; the other two only when asked to.
        streaming = body.get("stream") is not False if self.vendor == "ollama" else bool(body.get("stream"))
        if streaming:
            return self.error(400, "this server only answers non-streaming requests")
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.rstrip("\r\n").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                seen = Seen(method, path, headers, body)
                self.requests.append(seen)
                reply = self._check(seen) or self.script(self, seen)
                if reply.hang:
                    await asyncio.Event().wait()
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                reason = _REASONS.get(reply.status, "Error")
                status = [f"HTTP/1.1 {reply.status} {reason}", f"content-length: {len(reply.body)}"]
                status.extend(f"{k}: {v}" for k, v in reply.headers.items())
                writer.write(("\r\n".join(status) + "\r\n\r\n").encode() + reply.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
