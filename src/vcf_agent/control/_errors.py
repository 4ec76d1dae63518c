"""gRPC error helpers: INVALID_ARGUMENT naming the field (standard detail), aborts, page tokens."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status


async def invalid_argument(
    context: grpc.aio.ServicerContext[Any, Any], field: str, description: str
) -> NoReturn:
    """Abort with INVALID_ARGUMENT and a google.rpc.BadRequest naming `field`."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            ]
        )
    )
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=f"{field}: {description}", details=[detail]
    )
    await context.abort_with_status(rpc_status.to_status(status))  # type: ignore[attr-defined]
    raise AssertionError("abort_with_status returned")


async def abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str) -> NoReturn:
    """context.abort, typed as never returning."""
    await context.abort(code, message)
    raise AssertionError("abort returned")


async def page_offset(
    context: grpc.aio.ServicerContext[Any, Any], page_size: int, page_token: str, *, max_size: int | None
) -> int:
    """The offset a page_token stands for, after checking page_size (0..max_size) and the token."""
    if page_size < 0 or (max_size is not None and page_size > max_size):
        limit = "must not be negative" if max_size is None else f"must be 0..{max_size}"
        await invalid_argument(context, "page_size", f"page_size {limit}")
    try:
        offset = int(page_token or "0")
    except ValueError:
        offset = -1
    if offset < 0:
        await invalid_argument(context, "page_token", "page_token is not one this service issued")
    return offset
