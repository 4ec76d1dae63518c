"""The component shape shared across the project, and the one owner that starts and stops components.

`AsyncComponent` is what every long-lived part is: async start()/stop() and `async with`.
`ComponentStack` is the only place that starts several of them: in order, stopping them in
reverse; a failure to start stops what already started; a failure to stop is logged and the
rest are still stopped. `vcf-agent serve` (runner.serve, ServiceHost) and `vcf-agent run`
(app.pipeline) both go through it, so both shut down the same way.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self, TypeVar

log = logging.getLogger(__name__)

_SLOW_STOP_S = 1.0


class AsyncComponent(abc.ABC):
    """Something that must be started before use and stopped to release what it holds."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


ComponentT = TypeVar("ComponentT", bound=AsyncComponent)


class ComponentStack(AsyncComponent):
    """Components started in order and stopped in reverse, on a `contextlib.AsyncExitStack`.

    `start()` starts the components given at construction; `enter()` starts one more now (for
    owners that have steps between components, like creating streams once the bus is up).
    `starting()` wraps such steps: if one raises, everything started so far is stopped before the
    error propagates. `stop()` stops everything started, newest first; a component whose stop()
    raises is logged under `owner` and the others are still stopped.
    """

    def __init__(self, owner: str, components: Iterable[AsyncComponent] = ()) -> None:
        self.owner = owner
        self._planned = list(components)
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        async with self.starting():
            for component in self._planned:
                await self.enter(component)

    async def enter(self, component: ComponentT) -> ComponentT:
        """Start `component` now; stop() stops it before anything entered earlier."""
        await component.start()
        self._stack.push_async_callback(self._stop_logged, component.stop, component)
        return component

    @contextlib.asynccontextmanager
    async def starting(self) -> AsyncIterator[Self]:
        """Start-up steps; if one fails (or is cancelled), what already started is stopped."""
        try:
            yield self
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.aclose()

    async def _stop_logged(self, stop: Callable[[], Awaitable[None]], what: object) -> None:
        began = time.monotonic()
        try:
            await stop()
        except Exception:
            log.exception("%s: stopping %r failed", self.owner, what)
        took = time.monotonic() - began
        if took >= _SLOW_STOP_S:
            # Shutdown must fit the grace period (30 s in compose): this says what used it.
            log.info("%s: stopping %s took %.1fs", self.owner, type(what).__name__, took)
