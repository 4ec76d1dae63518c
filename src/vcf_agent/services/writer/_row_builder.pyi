"""Types of the compiled row builder (_row_builder.c); _row_builder_py.py is its twin."""

from typing import Any

class Collector:
    def __init__(
        self,
        schema: tuple[tuple[str, tuple[tuple[int, int, bool, int], ...]], ...],
        status_names: tuple[str, ...],
        unknown_status: str,
    ) -> None: ...
    def __len__(self) -> int: ...
    def add(self, payload: bytes, /) -> list[bytes]: ...
    def take(self) -> dict[str, Any]: ...
