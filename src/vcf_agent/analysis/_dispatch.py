"""Sending analysis requests to LLM providers: lanes, balancing, failover, deadlines, cache.

A *lane* per provider owns its concurrency (worker tasks), its token bucket, its
circuit breaker and a priority queue, so P1 variants are sent before P4 ones.
The *pool* answers for a requested name (a provider, or a pool of providers from
configuration): the strategy picks the first provider, the rest of the policy is
the failover order. When a lane's breaker opens, its queued requests fail over
at once to the next provider; a request that every provider failed, or whose
deadline passed, becomes a STATUS_FAILED result carrying every reason.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx
from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent import telemetry
from vcf_agent.config import RouterSettings
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.observability import log_context
from vcf_agent.v1 import analysis_pb2

from ._annotation_fields import context_of
from ._breaker import CircuitBreaker
from ._cache import CachedAnswer, CacheSync, cache_key
from ._llm_providers import CallError, LLMProvider, RateLimited
from ._local_annotator import LocalAnnotator
from ._metrics import provider_cost, provider_failovers, provider_outstanding, provider_tokens
from ._prompt import PROMPT_VERSION, Answer, MalformedAnswer, Prompt, build_prompt, parse_answer
from ._rate_limit import TokenBucket

log = logging.getLogger(__name__)

# Higher goes first; requests that carry their own priority keep it.
_TIER_PRIORITY = {"P1": 4, "P2": 3, "P3": 2, "P4": 1}


@dataclass(frozen=True, slots=True)
class Answered:
    provider: str
    model: str
    answer: Answer
    latency_ms: float
    input_tokens: int
    output_tokens: int
    calls: int


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    calls: int = 0


Outcome = Answered | Failed


@dataclass(slots=True, eq=False)
class _Ticket:
    prompt: Prompt
    deadline: float
    future: asyncio.Future[Outcome] = field(repr=False)
    # Whose request it is: the worker that sends it names them on every log line it writes.
    job_id: str = ""
    correlation_id: str = ""


class ProviderLane:
    """One provider's queue and workers; `max_concurrency` workers is the concurrency limit."""

    def __init__(
        self,
        provider: LLMProvider,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        settings = provider.settings
        self.settings = settings
        self.name = settings.name
        self.model = settings.model
        self._provider = provider
        self._jitter = jitter
        self.breaker = CircuitBreaker(
            self.name, settings.breaker_failures, settings.breaker_reset_s, clock=clock
        )
        self.bucket = TokenBucket(settings.rate_per_s, settings.burst, clock=clock)
        self.breaker.on_open(self._fail_queued)
        self._queue: list[tuple[int, int, _Ticket]] = []
        self._seq = itertools.count()
        self._ready: asyncio.Semaphore | None = None
        self._opened: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.outstanding = 0
        # The latest call failure: what "circuit open" reports as its cause.
        self._last_error = ""

    async def start(self) -> None:
        self._ready = asyncio.Semaphore(0)
        self._opened = asyncio.Event()
        await self._provider.start()
        self._workers = [
            asyncio.create_task(self._work(i), name=f"lane:{self.name}:{i}")
            for i in range(self.settings.max_concurrency)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self._resolve_queued(f"{self.name}: provider stopped")
        await self._provider.stop()

    def submit(
        self, prompt: Prompt, priority: int, deadline: float, *, job_id: str = "", correlation_id: str = ""
    ) -> asyncio.Future[Outcome]:
        """Queue one request; the future resolves to its outcome on this provider."""
        if self._ready is None:
            raise RuntimeError(f"lane {self.name} is not started")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ticket = _Ticket(prompt, deadline, future, job_id, correlation_id)
        heapq.heappush(self._queue, (-priority, next(self._seq), ticket))
        self._track(+1)
        self._ready.release()
        return future

    def _track(self, delta: int) -> None:
        self.outstanding += delta
        provider_outstanding.labels(self.name).set(self.outstanding)

    def _fail_queued(self) -> None:
        """Breaker opened: hand every queued request back for failover now, not after a timeout."""
        if self._opened is not None:
            self._opened.set()
            self._opened = asyncio.Event()
        # Called by the failure that opened it: the line names that request's job and variant.
        log.warning(
            "%s: circuit opened (last error: %s); %d queued requests fail over, none sent for %.0fs",
            self.name,
            self._last_error or "none recorded",
            len(self._queue),
            self.settings.breaker_reset_s,
        )
        self._resolve_queued(self._circuit_open())

    def _resolve_queued(self, reason: str) -> None:
        queued, self._queue = self._queue, []
        for _, _, ticket in queued:
            self._track(-1)
            if not ticket.future.done():
                ticket.future.set_result(Failed(reason))

    async def _work(self, channel: int) -> None:
        assert self._ready is not None
        while True:
            await self._ready.acquire()
            if not self._queue:
                continue  # drained by a breaker opening
            _, _, ticket = heapq.heappop(self._queue)
            try:
                if ticket.future.done():
                    continue  # its deadline passed while queued
                with log_context(job_id=ticket.job_id, correlation_id=ticket.correlation_id):
                    outcome = await self._outcome(ticket, channel)
                if not ticket.future.done():
                    ticket.future.set_result(outcome)
            finally:
                self._track(-1)

    async def _outcome(self, ticket: _Ticket, channel: int) -> Outcome:
        try:
            async with asyncio.timeout_at(ticket.deadline):
                return await self._attempts(ticket.prompt, channel)
        except TimeoutError:
            return Failed(f"{self.name}: deadline exceeded")
        except Exception as exc:
            log.exception("lane %s: unexpected error", self.name)
            return Failed(f"{self.name}: internal error {type(exc).__name__}: {exc}")

    async def _attempts(self, prompt: Prompt, channel: int) -> Outcome:
        """Calls until an answer, the attempt budget, a non-retryable error or an open breaker."""
        settings = self.settings
        calls = errors = malformed = 0
        while True:
            if not self.breaker.allow():
                return Failed(self._circuit_open(), calls)
            try:
                await self.bucket.acquire()
                calls += 1
                started = time.perf_counter()
                completion = await self._provider.complete(prompt, channel)
                answer = parse_answer(completion.text)
            except RateLimited as exc:
                # Being told to slow down is not the provider failing: no breaker count, no attempt used.
                self.breaker.release()
                telemetry.provider_requests.labels(self.name, "rate_limited").inc()
                self.bucket.defer(exc.retry_after if exc.retry_after is not None else self._backoff(1))
                continue
            except MalformedAnswer as exc:
                telemetry.provider_requests.labels(self.name, "malformed").inc()
                malformed += 1
                if malformed == 1:
                    self.breaker.release()
                    continue
                self._last_error = f"{self.name}: malformed answer after a retry: {exc}"
                log.warning("%s", self._last_error)
                self.breaker.record_failure()
                return Failed(self._last_error, calls)
            except CallError as exc:
                telemetry.provider_requests.labels(self.name, exc.code).inc()
                self._last_error = str(exc)
                errors += 1
                retrying = exc.retryable and errors < settings.max_attempts
                # Logged before the breaker counts it, so a line saying the circuit opened follows it.
                log.warning(
                    "%s (attempt %d of %d); %s",
                    exc,
                    errors,
                    settings.max_attempts,
                    "retrying" if retrying else "giving up on this provider",
                )
                self.breaker.record_failure()
                if not retrying:
                    return Failed(f"{exc} (attempt {errors})", calls)
                await self._sleep_unless_opened(self._backoff(errors))
                continue
            except BaseException:
                self.breaker.release()
                raise
            latency = time.perf_counter() - started
            self.breaker.record_success()
            telemetry.provider_requests.labels(self.name, "ok").inc()
            telemetry.provider_latency.labels(self.name).observe(latency)
            self._account(completion.input_tokens, completion.output_tokens)
            return Answered(
                self.name,
                self.model,
                answer,
                latency * 1000,
                completion.input_tokens,
                completion.output_tokens,
                calls,
            )

    def _circuit_open(self) -> str:
        """Why a request was not sent: the breaker, and the failure that last counted towards it."""
        cause = f" (last error: {self._last_error})" if self._last_error else ""
        return f"{self.name}: circuit open{cause}"

    def _backoff(self, failures: int) -> float:
        """Exponential with equal jitter: half the step fixed, half random, so retries spread out."""
        step = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2.0 ** (failures - 1))
        return step / 2 + step / 2 * self._jitter()

    async def _sleep_unless_opened(self, seconds: float) -> None:
        """Back off, but wake as soon as the breaker opens so the request fails over promptly."""
        assert self._opened is not None
        try:
            async with asyncio.timeout(seconds):
                await self._opened.wait()
        except TimeoutError:
            pass

    def _account(self, input_tokens: int, output_tokens: int) -> None:
        if input_tokens:
            provider_tokens.labels(self.name, "input").inc(input_tokens)
        if output_tokens:
            provider_tokens.labels(self.name, "output").inc(output_tokens)
        cost = (
            input_tokens * self.settings.input_cost_per_mtok
            + output_tokens * self.settings.output_cost_per_mtok
        ) / 1e6
        if cost:
            provider_cost.labels(self.name).inc(cost)


class ProviderPool(AsyncComponent):
    """Answers requests addressed to LLM provider names or configured pools of them."""

    def __init__(
        self,
        settings: RouterSettings,
        slots: Iterable[str],
        *,
        cache: CacheSync | None = None,
        annotator: LocalAnnotator | None = None,
        default_deadline_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self.slots = frozenset(s for s in slots if settings.members(s))
        backends = dict.fromkeys(m for s in sorted(self.slots) for m in settings.members(s))
        self.lanes = {
            name: ProviderLane(LLMProvider(settings.providers[name], transport)) for name in backends
        }
        self._cache = cache
        self._annotator = annotator or LocalAnnotator()
        self._default_deadline_s = default_deadline_s
        self._turn: defaultdict[str, int] = defaultdict(int)
        self._credit: defaultdict[str, dict[str, float]] = defaultdict(dict)

    async def start(self) -> None:
        for lane in self.lanes.values():
            await lane.start()
        if self._cache is not None:
            await self._cache.start()

    async def stop(self) -> None:
        if self._cache is not None:
            await self._cache.stop()
        for lane in self.lanes.values():
            await lane.stop()

    def order(self, slot: str) -> list[str]:
        """This request's policy: the strategy's pick first, then the others in configured order."""
        members = self._settings.members(slot)
        if len(members) <= 1:
            return list(members)
        live = [m for m in members if self.lanes[m].breaker.available] or list(members)
        strategy = self._settings.strategy
        if strategy == "round_robin":
            primary = live[self._turn[slot] % len(live)]
            self._turn[slot] += 1
        elif strategy == "weighted":
            primary = self._weighted(slot, live)
        else:
            primary = min(live, key=lambda m: self.lanes[m].outstanding)
        start = members.index(primary)
        return [*members[start:], *members[:start]]

    def _weighted(self, slot: str, live: Sequence[str]) -> str:
        """Smooth weighted round-robin (as nginx does): exact shares, evenly interleaved."""
        credit = self._credit[slot]
        weights = {m: self.lanes[m].settings.weight for m in live}
        total = sum(weights.values())
        if total <= 0:
            return live[0]
        for member, weight in weights.items():
            credit[member] = credit.get(member, 0.0) + weight
        chosen = max(live, key=lambda m: credit[m])
        credit[chosen] -= total
        return chosen

    async def analyse(
        self, slot: str, requests: Sequence[analysis_pb2.AnalysisRequest]
    ) -> list[analysis_pb2.AnalysisResult]:
        """One result per request, in order: answered, from the cache, or failed with the reasons."""
        prepared = [self._prepare(request) for request in requests]
        # Queue the most urgent first, so they also lead the lanes' queues before workers wake.
        order = sorted(range(len(prepared)), key=lambda i: -prepared[i][1])
        tasks = {i: asyncio.ensure_future(self._one(slot, requests[i], *prepared[i])) for i in order}
        done = await asyncio.gather(*(tasks[i] for i in range(len(requests))))
        entries = [entry for _, entry in done if entry is not None]
        if entries and self._cache is not None:
            await self._cache.put(entries)
        return [result for result, _ in done]

    def _prepare(self, request: analysis_pb2.AnalysisRequest) -> tuple[analysis_pb2.LocalAnnotation, int]:
        annotation = self._annotator.annotate(
            request.variant, context_of(request.annotation_context)
        ).annotation
        priority = request.priority or _TIER_PRIORITY.get(annotation.priority_tier, 0)
        return annotation, priority

    async def _one(
        self,
        slot: str,
        request: analysis_pb2.AnalysisRequest,
        annotation: analysis_pb2.LocalAnnotation,
        priority: int,
    ) -> tuple[analysis_pb2.AnalysisResult, tuple[str, bytes] | None]:
        prompt = build_prompt(request.variant, annotation)
        chain = self.order(slot)
        # The request's tenant and the exact prompt: an answer is never served to another tenant,
        # nor for the same locus asked about with other genotypes or annotation.
        keys = {name: cache_key(request.tenant_id, prompt, name, self.lanes[name].model) for name in chain}
        if self._cache is not None:
            hit = self._cache.cache.lookup([keys[name] for name in chain])
            if hit is not None:
                index, cached = hit
                model = _model_label(slot, chain[index], cached.model)
                return _result(request, slot, annotation, cached, model, latency_ms=0.0, calls=0), None
        loop = asyncio.get_running_loop()
        deadline = _deadline(request, loop.time(), self._default_deadline_s)
        reasons: list[str] = []
        calls = 0
        tried: list[str] = []
        try:
            async with asyncio.timeout_at(deadline):
                while len(tried) < len(chain):
                    untried = [m for m in chain if m not in tried]
                    live = [m for m in untried if self.lanes[m].breaker.available]
                    if not live:
                        # Every remaining provider is open: wait for the first half-open probe slot.
                        await asyncio.sleep(max(0.01, min(self.lanes[m].breaker.retry_in for m in untried)))
                        continue
                    name = live[0]
                    if tried:
                        provider_failovers.labels(tried[-1]).inc()
                    tried.append(name)
                    outcome = await self.lanes[name].submit(
                        prompt,
                        priority,
                        deadline,
                        job_id=request.job_id,
                        correlation_id=request.correlation_id,
                    )
                    calls += outcome.calls
                    if isinstance(outcome, Answered):
                        cached = CachedAnswer(
                            outcome.answer.classification,
                            outcome.answer.confidence,
                            outcome.answer.criteria,
                            outcome.answer.rationale,
                            outcome.model,
                        )
                        model = _model_label(slot, name, outcome.model)
                        result = _result(
                            request,
                            slot,
                            annotation,
                            cached,
                            model,
                            latency_ms=outcome.latency_ms,
                            calls=calls,
                        )
                        result.input_tokens = outcome.input_tokens
                        result.output_tokens = outcome.output_tokens
                        return result, (keys[name], cached.pack())
                    reasons.append(outcome.reason)
        except TimeoutError:
            reasons.append("deadline exceeded")
        failed = _base_result(request, slot, annotation)
        failed.status = analysis_pb2.AnalysisResult.STATUS_FAILED
        failed.model = ",".join(tried)
        failed.error = "; ".join(reasons) or f"no provider configured for {slot}"
        failed.attempt = calls
        return failed, None


def _deadline(request: analysis_pb2.AnalysisRequest, now: float, default_s: float) -> float:
    """The request's wall-clock deadline on the loop's clock; the default when it has none."""
    if request.HasField("deadline"):
        return now + (request.deadline.ToNanoseconds() / 1e9 - time.time())
    return now + default_s


def _model_label(slot: str, provider: str, model: str) -> str:
    """The model, prefixed with the provider when it answered for another name (pool, failover)."""
    return model if slot == provider else f"{provider}/{model}"


def _base_result(
    request: analysis_pb2.AnalysisRequest, slot: str, annotation: analysis_pb2.LocalAnnotation
) -> analysis_pb2.AnalysisResult:
    result = analysis_pb2.AnalysisResult(
        correlation_id=request.correlation_id,
        job_id=request.job_id,
        tenant_id=request.tenant_id,
        provider=slot,
        prompt_version=PROMPT_VERSION,
    )
    result.requested_providers.extend(request.requested_providers)
    result.annotation.CopyFrom(annotation)
    completed = Timestamp()
    completed.GetCurrentTime()
    result.completed_at.CopyFrom(completed)
    return result


def _result(
    request: analysis_pb2.AnalysisRequest,
    slot: str,
    annotation: analysis_pb2.LocalAnnotation,
    answer: CachedAnswer,
    model: str,
    *,
    latency_ms: float,
    calls: int,
) -> analysis_pb2.AnalysisResult:
    result = _base_result(request, slot, annotation)
    result.status = analysis_pb2.AnalysisResult.STATUS_OK
    result.model = model
    result.classification = answer.classification
    result.confidence = answer.confidence
    result.criteria.extend(answer.criteria)
    result.rationale = answer.rationale
    result.latency_ms = latency_ms
    result.attempt = calls
    return result


class PoolSlot:
    """A requested name served by the pool, shaped as an AnalysisProvider for ProviderWorker."""

    # Its requests wait on vendors' endpoints side by side (the lanes bound the concurrency).
    batches_per_poll = 8

    def __init__(self, pool: ProviderPool, name: str) -> None:
        self._pool = pool
        self.name = name

    async def analyse(
        self, requests: Sequence[analysis_pb2.AnalysisRequest]
    ) -> list[analysis_pb2.AnalysisResult]:
        return await self._pool.analyse(self.name, requests)
