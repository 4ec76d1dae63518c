"""Wire schema: message codecs, headers and deterministic ids."""

from vcf_agent.schema._classifications import CLASSIFICATIONS
from vcf_agent.schema._codec import (
    ENCODING_IDENTITY,
    ENCODING_ZSTD,
    HEADER_CONTENT_ENCODING,
    HEADER_MESSAGE_TYPE,
    HEADER_SCHEMA_VERSION,
    HEADER_TENANT,
    SCHEMA_VERSION,
    PayloadError,
    decode,
    decode_serialized,
    encode,
    encode_serialized,
    message_type,
    serialized_message,
)
from vcf_agent.schema._ids import (
    STORE_KEY_VERSION,
    TENANT_ID_PATTERN,
    correlation_id,
    correlation_prefix,
    file_digest_hasher,
    tenant_key,
    variant_key,
)
from vcf_agent.schema._job_states import TERMINAL_STATES, ended_badly, exit_code, state_name
from vcf_agent.schema._regions import INT64_MAX, parse_region
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
    "INT64_MAX",
    "SCHEMA_VERSION",
    "SMALL_VARINTS",
    "STORE_KEY_VERSION",
    "TENANT_ID_PATTERN",
    "TERMINAL_STATES",
    "PayloadError",
    "correlation_id",
    "correlation_prefix",
    "decode",
    "decode_serialized",
    "encode",
    "encode_serialized",
    "ended_badly",
    "exit_code",
    "file_digest_hasher",
    "length_delimited",
    "message_type",
    "parse_region",
    "read_varint",
    "repeated_messages",
    "serialized_message",
    "split_variant_first",
    "state_name",
    "tenant_key",
    "variant_first_result",
    "variant_first_results",
    "variant_key",
    "varint",
]
