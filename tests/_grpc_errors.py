"""Reading the google.rpc.BadRequest detail of an INVALID_ARGUMENT, as a client would."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]


def violated_field(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            detail = error_details_pb2.BadRequest()
            status.details[0].Unpack(detail)
            return str(detail.field_violations[0].field)
    raise AssertionError(f"no BadRequest detail in {error}")
