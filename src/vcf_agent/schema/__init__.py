"""Wire schema: message codecs, headers and deterministic ids."""

from vcf_agent.schema._classifications import CLASSIFICATIONS
from vcf_agent.schema._codec import (
    ENCODING_IDENTITY,
    ENCODING_ZSTD,
    HEADER_CONTENT_ENCODING,
    HEADER_MESSAGE_TYPE,
    HEADER_SCHEMA_VERSION,
    HEADER_TENANT,
    HEADER_TRACEPARENT,
    SCHEMA_VERSION,
    PayloadError,
    decode,
    decode_serialized,
    encode,
    encode_serialized,
    message_type,
    serialized_message,
)
from vcf_agent.schema._ids import correlation_id, file_digest_hasher, variant_key
from vcf_agent.schema._job_states import TERMINAL_STATES, state_name
from vcf_agent.schema._variant_first import split_variant_first, variant_first_result, variant_first_results
from vcf_agent.schema._wire import SMALL_VARINTS, length_delimited, read_varint, repeated_messages, varint

__all__ = [
    "CLASSIFICATIONS",
    "ENCODING_IDENTITY",
    "ENCODING_ZSTD",
    "HEADER_CONTENT_ENCODING",
    "HEADER_MESSAGE_TYPE",
    "HEADER_SCHEMA_VERSION",
    "HEADER_TENANT",
    "HEADER_TRACEPARENT",
    "SCHEMA_VERSION",
    "SMALL_VARINTS",
    "TERMINAL_STATES",
    "PayloadError",
    "correlation_id",
    "decode",
    "decode_serialized",
    "encode",
    "encode_serialized",
    "file_digest_hasher",
    "length_delimited",
    "message_type",
    "read_varint",
    "repeated_messages",
    "serialized_message",
    "split_variant_first",
    "state_name",
    "variant_first_result",
    "variant_first_results",
    "variant_key",
    "varint",
]
