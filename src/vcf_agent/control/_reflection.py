"""gRPC server reflection, v1 and v1alpha, serving the .proto files WITH their comments.

grpcio-reflection serves descriptors from Python's generated pool, which keeps no comments, and
only as `grpc.reflection.v1alpha`. Here the files come from `vcf_agent/v1/descriptors.binpb`, a
FileDescriptorSet that scripts/generate_proto.py writes with `--include_source_info`, so
`grpcurl describe` prints each RPC's, message's and field's comment. `grpc.reflection.v1` is the
same protocol promoted unchanged (same messages, same field numbers; only the package differs), so
both names share one handler and grpcio-reflection's generated v1alpha messages; the v1 service's
own descriptor is v1alpha's with the package renamed, so clients can describe it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from importlib import resources

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
_METHOD = "ServerReflectionInfo"


def _v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, derived from the v1alpha file grpcio-reflection ships."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # Java/Go package names of v1alpha
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # assigning even "" would mark a scalar as typed
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto


class DocumentedFiles:
    """Every file reflection may serve: ours with comments, health and reflection without."""

    def __init__(self) -> None:
        documented = descriptor_pb2.FileDescriptorSet.FromString(
            resources.files("vcf_agent.v1").joinpath("descriptors.binpb").read_bytes()
        )
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self.pool = descriptor_pool.DescriptorPool()
        undocumented = []
        for module in (health_pb2, reflection_pb2):
            proto = descriptor_pb2.FileDescriptorProto()
            module.DESCRIPTOR.CopyToProto(proto)
            undocumented.append(proto)
        for proto in (*documented.file, *undocumented, _v1_reflection_file()):
            self._files[proto.name] = proto
            self.pool.Add(proto)

    def with_dependencies(self, name: str) -> list[bytes]:
        """The file first, then every file it imports, transitively, each once."""
        ordered: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop(0)
            if current not in ordered:
                ordered.append(current)
                pending.extend(self._files[current].dependency)
        return [self._files[n].SerializeToString() for n in ordered]


@cache
def documented_files() -> DocumentedFiles:
    return DocumentedFiles()


class ReflectionServicer:
    """ServerReflectionInfo for both protocol versions (their messages are the same on the wire)."""

    def __init__(self, service_names: list[str]) -> None:
        self._services = sorted({*service_names, V1, V1ALPHA})
        self._files = documented_files()

    async def info(
        self, requests: AsyncIterator[reflection_pb2.ServerReflectionRequest], context: object
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for request in requests:
            yield self._answer(request)

    def _answer(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        pool = self._files.pool
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                services = [reflection_pb2.ServiceResponse(name=name) for name in self._services]
                return reflection_pb2.ServerReflectionResponse(
                    original_request=request,
                    list_services_response=reflection_pb2.ListServiceResponse(service=services),
                )
            if kind == "file_by_filename":
                name = pool.FindFileByName(request.file_by_filename).name
            elif kind == "file_containing_symbol":
                name = pool.FindFileContainingSymbol(request.file_containing_symbol).name
            elif kind == "all_extension_numbers_of_type":
                message = pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                numbers = sorted(e.number for e in pool.FindAllExtensions(message))
                return reflection_pb2.ServerReflectionResponse(
                    original_request=request,
                    all_extension_numbers_response=reflection_pb2.ExtensionNumberResponse(
                        base_type_name=message.full_name, extension_number=numbers
                    ),
                )
            elif kind == "file_containing_extension":
                wanted = request.file_containing_extension
                message = pool.FindMessageTypeByName(wanted.containing_type)
                extension = pool.FindExtensionByNumber(message, wanted.extension_number)
                name = pool.FindFileContainingSymbol(extension.full_name).name
            else:
                return _error(request, grpc.StatusCode.INVALID_ARGUMENT)
        except KeyError:
            return _error(request, grpc.StatusCode.NOT_FOUND)
        return reflection_pb2.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=self._files.with_dependencies(name)
            ),
        )


def _error(
    request: reflection_pb2.ServerReflectionRequest, code: grpc.StatusCode
) -> reflection_pb2.ServerReflectionResponse:
    number, text = code.value
    return reflection_pb2.ServerReflectionResponse(
        original_request=request,
        error_response=reflection_pb2.ErrorResponse(error_code=number, error_message=text),
    )


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> list[str]:
    """Serve reflection v1 and v1alpha on `server`; returns the reflection services' names."""
    servicer = ReflectionServicer(service_names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.info,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (V1, V1ALPHA):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, {_METHOD: handler}),))
    return [V1, V1ALPHA]
