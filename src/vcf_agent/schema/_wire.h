/*
 * Reading protobuf wire bytes as upb does, for the compiled readers
 * (services/writer/_row_builder.c, analysis/_local_wire.c under src/vcf_agent). Their input
 * comes off the bus, so every varint, length and wire type is checked against
 * the end of the buffer, and a payload upb would reject is never read as if it
 * were valid. The writers (those two and services/ingest/_record_encoder.c) share varint_size.
 */
#ifndef VCF_AGENT_SCHEMA_WIRE_H
#define VCF_AGENT_SCHEMA_WIRE_H

#include <stdint.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

/* Values are at most 10 bytes, tags and lengths at most 5, as upb reads them. */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, int max_bytes, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t value = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (p >= end)
            return -1;
        uint8_t byte = *p++;
        value |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *pp = p;
            *out = value;
            return 0;
        }
    }
    return -1;
}

/* How many bytes `value` takes as a varint: what a writer puts before a field it writes after. */
static inline int varint_size(uint64_t value) {
    int size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

/* One field: its header, its value, and where it starts (to copy it whole). */
typedef struct {
    uint32_t number;
    int wire;
    uint64_t value;        /* varint, fixed64 or fixed32 fields */
    const uint8_t *data;   /* length-delimited fields: `len` bytes */
    size_t len;
    const uint8_t *start;  /* the first byte of the tag */
    const char *error;     /* why next_field returned -1 */
} Field;

static inline int field_error(Field *f, const char *why) {
    f->error = why;
    return -1;
}

/* Reads the next field; returns 1 on a field, 0 at the end, -1 (reason in f->error) on anything
 * upb would reject, and on groups, which none of our schemas use. */
static inline int next_field(const uint8_t **pp, const uint8_t *end, Field *f) {
    const uint8_t *p = *pp;
    uint64_t tag, len;
    uint32_t fixed32;
    if (p >= end)
        return 0;
    f->start = p;
    f->value = 0;
    f->data = NULL;
    f->len = 0;
    if (read_varint(&p, end, 5, &tag) || tag > UINT32_MAX)
        return field_error(f, "malformed field tag");
    f->number = (uint32_t)(tag >> 3);
    f->wire = (int)(tag & 7);
    if (f->number == 0)
        return field_error(f, "field number 0");
    switch (f->wire) {
    case WIRE_VARINT:
        if (read_varint(&p, end, 10, &f->value))
            return field_error(f, "truncated or overlong varint");
        break;
    case WIRE_FIXED64:
        if (end - p < 8)
            return field_error(f, "truncated 64-bit value");
        memcpy(&f->value, p, 8); /* little-endian, as the wire format and every supported host */
        p += 8;
        break;
    case WIRE_LEN:
        if (read_varint(&p, end, 5, &len) || len > INT32_MAX)
            return field_error(f, "malformed length");
        if (len > (uint64_t)(end - p))
            return field_error(f, "length past the end of the message");
        f->data = p;
        f->len = (size_t)len;
        p += len;
        break;
    case WIRE_FIXED32:
        if (end - p < 4)
            return field_error(f, "truncated 32-bit value");
        memcpy(&fixed32, p, 4);
        f->value = fixed32;
        p += 4;
        break;
    case 3:
    case 4:
        return field_error(f, "group wire types are not used by this schema");
    default:
        return field_error(f, "invalid wire type");
    }
    *pp = p;
    return 1;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), as upb checks proto3 strings. */
static inline int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= need)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += need + 1;
    }
    return 1;
}

#endif
