"""The component shape shared across the project: async start()/stop() and `async with`."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


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
