/*
 * The compiled fast path of _vcf_reader: one VCF record line to serialized
 * VariantMessages, for records whose every value is already in the reader's
 * caches of checked encodings.
 *
 * Why C: the pure-Python encoder spends ~10 us per single-sample record in
 * interpreter overhead (splits, joins, dict lookups, blake2b calls), far more
 * than htslib-class parsing costs. This module does the same lookups and the
 * same byte concatenation without allocating per field.
 *
 * Contract with _vcf_reader.VcfReader (which owns the caches and the rules):
 * - encode(line) returns a list with one length-prefixed VariantBatch entry
 *   per ALT that is not a gVCF placeholder (<*>, <NON_REF>: an empty ALT
 *   field in the cache; a record of only those is an empty list, counted in
 *   reference_blocks), byte for byte what the Python encoder writes, and advances the
 *   line/record counters; or None, having changed nothing, whenever any value
 *   misses a cache or the line needs a rule decision (contig change, a blank
 *   or unterminated line, padding, non-diploid genotypes with G/P fields, a
 *   REF-only record). The Python path then handles that line and fills the
 *   caches, so validation logic lives in one place (_vcf_validator).
 * - Values that are nearly unique per record are checked here without a
 *   cache, for the plain cases only: QUAL, and Integer and Float INFO and
 *   FORMAT values (the validator's number grammar, int32 range and value
 *   count, diploid), of which DP, GQ and AD are stored. Floats are converted
 *   by CPython's own parser, as float() does.
 *   Anything else about them falls back as above.
 * - A direct-mapped memo in front of the caches saves building a str key per
 *   value. It keeps its own references, so its entries stay valid when the
 *   reader clears a cache to bound memory (an encoding checked once stays
 *   right for the whole file).
 * - Correlation ids are hashlib's BLAKE2b, called through Python as the Python
 *   path calls it. Field tags and the codes of the reader's specs come from
 *   the generated wire_numbers.h (scripts/generate_proto.py), never by hand.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_wire.h"
#include "wire_numbers.h"

#define INT_MAX_31 2147483647LL
/* BCF reserves the 8 lowest int32 values (missing, end of vector..). */
#define VCF_INT_MIN (-2147483648LL + 8)
/* More FORMAT keys, or values in one list, than this go through the Python path. */
#define MAX_FORMAT_KEYS 64
#define MAX_LIST_VALUES 256
#define MEMO_SLOTS (1 << 17)
#define MEMO_KEY 30

/* ---- a growable byte buffer ---- */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

static int buf_put_bytes(Buf *b, PyObject *bytes) {
    return buf_put(b, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

static Py_ssize_t varint_into(char *out, uint64_t value) {
    Py_ssize_t n = 0;
    while (value >= 0x80) {
        out[n++] = (char)((value & 0x7f) | 0x80);
        value >>= 7;
    }
    out[n++] = (char)value;
    return n;
}

static int buf_put_varint(Buf *b, uint64_t value) {
    if (buf_reserve(b, 10) < 0) return -1;
    b->len += varint_into(b->data + b->len, value);
    return 0;
}

/* A sint32 value's varint payload (zigzag: -1 is 1, 1 is 2). */
static uint64_t zigzag(long long value) {
    return ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
}

/* The number of varints in p[0:n]: one byte without the continuation bit ends each. */
static Py_ssize_t varint_count(const char *p, Py_ssize_t n) {
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) count += !((uint8_t)p[i] & 0x80);
    return count;
}

/* A packed repeated field holding `values`; nothing when it is empty (proto3 writes none). */
static int buf_put_packed(Buf *b, const char *tag, Py_ssize_t tag_len, const Buf *values) {
    if (!values->len) return 0;
    if (buf_put(b, tag, tag_len) < 0 || buf_put_varint(b, (uint64_t)values->len) < 0) return -1;
    return buf_put(b, values->data, values->len);
}

/* ---- the encoder ---- */

typedef struct {
    PyObject *cache; /* the dict the value came from (a strong reference, so its address stays unique) */
    PyObject *value;
    Py_ssize_t len;
    char key[MEMO_KEY];
} MemoSlot;

typedef struct {
    PyObject_HEAD
    Py_ssize_t columns;
    int numbered;
    PyObject *prefix;        /* bytes: correlation_prefix(tenant, file_id) */
    PyObject *job_fields;    /* bytes */
    PyObject *sample_fields; /* tuple of bytes */
    PyObject *chrom_fields;  /* dict str -> bytes */
    PyObject *refs;          /* dict str -> bytes */
    PyObject *alts;          /* dict str -> (list[str], list[bytes], bytes) */
    PyObject *quals;         /* dict str -> bytes */
    PyObject *filters;       /* dict str -> bytes */
    PyObject *info;          /* dict int -> dict str -> bytes */
    PyObject *layouts;       /* dict str -> (width, gt, checks_ploidy, by_alts, natives, ...) */
    PyObject *non_diploid;   /* dict str -> int */
    PyObject *info_natives;  /* dict str -> (kind, number code, map key field) */
    PyObject *chrom;         /* str */
    PyObject *suffix;        /* bytes */
    PyObject *blake2b;       /* hashlib.blake2b, its keyword names ("digest_size",), 16 and "digest" */
    PyObject *digest_keywords;
    PyObject *digest_size;
    PyObject *digest_method;
    long long line_number;
    long long record_index;
    long long last_pos;
    long long placeholder_alleles;
    long long reference_blocks;
    long long position;
    /* Bound on one record's encoded messages (0: none); a record over it goes to the Python path, which fails it. */
    long long max_record_bytes;
    const char **field_start;
    Py_ssize_t *field_len;
    Buf head;
    Buf tail;
    /* One record's GenotypeColumns: its body, then each column as it fills, sample by sample. */
    Buf columns_body;
    Buf samples;   /* the samples field of every sample, written once per reader */
    Buf ploidy;
    Buf alleles;
    Buf phased;    /* (samples + 7) / 8 bytes */
    Buf depth;
    Buf quality;
    Buf ad_counts;
    Buf ad_values;
    MemoSlot *memo;
} RecordEncoder;

/* A borrowed value of `dict` for the ASCII text p[0:n]; NULL on a miss or an error. */
static PyObject *lookup(PyObject *dict, const char *p, Py_ssize_t n) {
    PyObject *key = PyUnicode_New(n, 127);
    if (!key) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(key), p, n);
    PyObject *value = PyDict_GetItemWithError(dict, key);
    Py_DECREF(key);
    return value;
}

static uint64_t memo_hash(PyObject *cache, const char *p, Py_ssize_t n) {
    uint64_t h = 0xcbf29ce484222325ULL ^ ((uint64_t)(uintptr_t)cache >> 4);
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 31);
}

/* Remember `value` for (dict, p[0:n]) in `slot`, releasing what the slot held. */
static void memo_put(MemoSlot *slot, PyObject *dict, const char *p, Py_ssize_t n, PyObject *value) {
    PyObject *old_value = slot->value, *old_cache = slot->cache;
    slot->cache = Py_NewRef(dict);
    slot->value = Py_NewRef(value);
    slot->len = n;
    memcpy(slot->key, p, n);
    Py_XDECREF(old_value);
    Py_XDECREF(old_cache);
}

static MemoSlot *memo_slot(RecordEncoder *self, PyObject *dict, const char *p, Py_ssize_t n) {
    return &self->memo[memo_hash(dict, p, n) & (MEMO_SLOTS - 1)];
}

static int memo_holds(MemoSlot *slot, PyObject *dict, const char *p, Py_ssize_t n) {
    return slot->cache == dict && slot->len == n && memcmp(slot->key, p, n) == 0;
}

/*
 * `lookup` through the memo. The result is borrowed from the memo or the dict:
 * use it before the next call, or take a reference, since a later call may
 * evict the memo's entry.
 */
static PyObject *cached(RecordEncoder *self, PyObject *dict, const char *p, Py_ssize_t n) {
    if (n > MEMO_KEY) return lookup(dict, p, n);
    MemoSlot *slot = memo_slot(self, dict, p, n);
    if (memo_holds(slot, dict, p, n)) return slot->value;
    PyObject *value = lookup(dict, p, n);
    if (value) memo_put(slot, dict, p, n, value);
    return value;
}

static PyObject *cached_bytes(RecordEncoder *self, PyObject *dict, const char *p, Py_ssize_t n) {
    PyObject *value = cached(self, dict, p, n);
    return value && PyBytes_CheckExact(value) ? value : NULL;
}

/* Whether a GT text is in non_diploid (-1 on error); both answers are memoized. */
static int non_diploid(RecordEncoder *self, const char *p, Py_ssize_t n) {
    PyObject *dict = self->non_diploid;
    if (n > MEMO_KEY) {
        PyObject *value = lookup(dict, p, n);
        return value ? 1 : (PyErr_Occurred() ? -1 : 0);
    }
    MemoSlot *slot = memo_slot(self, dict, p, n);
    if (memo_holds(slot, dict, p, n)) return slot->value == Py_True;
    PyObject *value = lookup(dict, p, n);
    if (!value && PyErr_Occurred()) return -1;
    memo_put(slot, dict, p, n, value ? Py_True : Py_False);
    return value != NULL;
}

/* [+-]digits within VCF's int32 range; 0 when the text is anything else. */
static int parse_vcf_int(const char *p, Py_ssize_t n, long long *out) {
    Py_ssize_t i = 0;
    int negative = 0;
    if (n && (p[0] == '+' || p[0] == '-')) {
        negative = p[0] == '-';
        i = 1;
    }
    if (i == n) return 0;
    long long value = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        value = value * 10 + (p[i] - '0');
        if (value > INT_MAX_31 + 1) return 0;
    }
    if (negative) value = -value;
    if (value < VCF_INT_MIN || value > INT_MAX_31) return 0;
    *out = value;
    return 1;
}

/* The validator's float grammar, [-+]?(digits[.digits]|.digits)([eE][-+]?digits)?, minus inf/nan. */
static int parse_vcf_float(const char *p, Py_ssize_t n, double *out) {
    char text[64];
    Py_ssize_t i = 0;
    if (n == 0 || n >= (Py_ssize_t)sizeof text) return 0;
    if (p[0] == '+' || p[0] == '-') i++;
    Py_ssize_t start = i;
    while (i < n && p[i] >= '0' && p[i] <= '9') i++;
    Py_ssize_t whole = i - start;
    Py_ssize_t fraction = 0;
    if (i < n && p[i] == '.') {
        i++;
        Py_ssize_t after = i;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++;
        fraction = i - after;
    }
    if (whole == 0 && fraction == 0) return 0;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        Py_ssize_t digits = i;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++;
        if (i == digits) return 0;
    }
    if (i != n) return 0;
    memcpy(text, p, n);
    text[n] = '\0';
    double value = PyOS_string_to_double(text, NULL, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = value;
    return 1;
}

static Py_ssize_t expected_count(long number, Py_ssize_t n_alt) {
    switch (number) {
        case NUMBER_A: return n_alt;
        case NUMBER_R: return n_alt + 1;
        case NUMBER_G: return (n_alt + 1) * (n_alt + 2) / 2; /* diploid, as INFO is checked */
        case NUMBER_ANY: return -1;
        default: return number;
    }
}

/*
 * A comma-separated list of plain VCF numbers (integers, else floats) whose count fits
 * `number`. Values go to `out` (when not NULL) as varints or little-endian doubles; a
 * missing `.` keeps its place as IntList.RESERVED_MISSING or a NaN (variant.proto; a list of
 * only `.` has no value present and is omitted), or, with `sint32`, is written as -1,
 * every value as a zigzag varint (GenotypeColumns.allele_depths). Returns 1 with
 * the bytes written in *size and the values not missing in *present, 0 when anything
 * is not plain or the count is wrong (the Python path then decides), -1 on error.
 */
static int scan_numbers(int integers, long number, Py_ssize_t n_alt, const char *p, Py_ssize_t n, char *out,
                        int sint32, Py_ssize_t *size, Py_ssize_t *present) {
    const char *end = p + n;
    Py_ssize_t count = 0;
    *size = *present = 0;
    for (;;) {
        const char *comma = memchr(p, ',', end - p);
        const char *stop = comma ? comma : end;
        if (count == MAX_LIST_VALUES) return 0;
        count++;
        long long integer = -1;
        double real;
        if (stop - p == 1 && p[0] == '.') {
            if (out && sint32) {
                *size += varint_into(out + *size, zigzag(integer));
            } else if (out && integers) {
                *size += varint_into(out + *size, (uint64_t)(long long)INT_LIST_RESERVED_MISSING);
            } else if (out) {
                /* Python's float('nan'), byte for byte (Py_NAN may carry the sign bit). */
                static const char quiet_nan[8] = {0, 0, 0, 0, 0, 0, (char)0xf8, 0x7f};
                memcpy(out + *size, quiet_nan, 8);
                *size += 8;
            }
        } else if (integers) {
            if (!parse_vcf_int(p, stop - p, &integer)) return 0;
            if (out) *size += varint_into(out + *size, sint32 ? zigzag(integer) : (uint64_t)integer);
            ++*present;
        } else {
            if (!parse_vcf_float(p, stop - p, &real)) return 0;
            if (out) {
                if (PyFloat_Pack8(real, out + *size, 1) < 0) return -1;
                *size += 8;
            }
            ++*present;
        }
        if (!comma) break;
        p = comma + 1;
    }
    Py_ssize_t expected = expected_count(number, n_alt);
    return expected < 0 || count == expected || (count == 1 && *present == 0);
}

/* An Integer or Float INFO entry the caches missed, as the Python path encodes it; 1 done, 0 fall back. */
static int encode_info_native(RecordEncoder *self, const char *p, Py_ssize_t n, Py_ssize_t n_alt) {
    const char *eq = memchr(p, '=', n);
    if (!eq) return 0;
    PyObject *spec = cached(self, self->info_natives, p, eq - p);
    if (!spec) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 3) return 0;
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    long number = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
    if (PyErr_Occurred()) return -1;
    PyObject *key_field = PyTuple_GET_ITEM(spec, 2);
    if (!PyBytes_CheckExact(key_field)) return 0;
    if (kind != INFO_KIND_INTEGER && kind != INFO_KIND_FLOAT) return 0;
    const char *raw = eq + 1;
    Py_ssize_t raw_len = p + n - raw;
    if (raw_len == 1 && raw[0] == '.') return 1; /* no values: the entry is omitted */
    char packed[MAX_LIST_VALUES * 10];
    Py_ssize_t size, present;
    int done = scan_numbers(kind == INFO_KIND_INTEGER, number, n_alt, raw, raw_len, packed, 0, &size, &present);
    if (done <= 0) return done;
    if (!present) return 1;
    /* InfoValue.ints or .floats holding an IntList or FloatList, whose values tags are alike. */
    const char *list_tag = kind == INFO_KIND_INTEGER ? INFO_VALUE_INTS_TAG : INFO_VALUE_FLOATS_TAG;
    const char *values_tag = kind == INFO_KIND_INTEGER ? INT_LIST_VALUES_TAG : FLOAT_LIST_VALUES_TAG;
    Py_ssize_t list = (Py_ssize_t)TAG_LEN(INT_LIST_VALUES_TAG) + varint_size((uint64_t)size) + size;
    Py_ssize_t info_value = (Py_ssize_t)TAG_LEN(INFO_VALUE_INTS_TAG) + varint_size((uint64_t)list) + list;
    Py_ssize_t body = PyBytes_GET_SIZE(key_field) + (Py_ssize_t)TAG_LEN(VARIANT_MESSAGE_INFO_ENTRY_VALUE_TAG) +
                      varint_size((uint64_t)info_value) + info_value;
    Buf *tail = &self->tail;
    if (buf_put(tail, VARIANT_MESSAGE_INFO_TAG, TAG_LEN(VARIANT_MESSAGE_INFO_TAG)) < 0 ||
        buf_put_varint(tail, (uint64_t)body) < 0 || buf_put_bytes(tail, key_field) < 0 ||
        buf_put(tail, VARIANT_MESSAGE_INFO_ENTRY_VALUE_TAG, TAG_LEN(VARIANT_MESSAGE_INFO_ENTRY_VALUE_TAG)) < 0 ||
        buf_put_varint(tail, (uint64_t)info_value) < 0 || buf_put(tail, list_tag, TAG_LEN(INFO_VALUE_INTS_TAG)) < 0 ||
        buf_put_varint(tail, (uint64_t)list) < 0 || buf_put(tail, values_tag, TAG_LEN(INT_LIST_VALUES_TAG)) < 0 ||
        buf_put_varint(tail, (uint64_t)size) < 0 || buf_put(tail, packed, size) < 0)
        return -1;
    return 1;
}

/* Appends a cached DP, GQ or AD encoding (see _vcf_reader._Layout) to its column; others store nothing. */
static int put_stored(RecordEncoder *self, int code, PyObject *value) {
    const char *p = PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    switch (code) {
    case FORMAT_NATIVE_DEPTH:
    case FORMAT_NATIVE_DEPTH_FLOAT:
        return buf_put(&self->depth, p, n);
    case FORMAT_NATIVE_GQ:
    case FORMAT_NATIVE_GQ_FLOAT:
        return buf_put(&self->quality, p, n);
    case FORMAT_NATIVE_AD:
        if (buf_put_varint(&self->ad_counts, (uint64_t)varint_count(p, n)) < 0) return -1;
        return buf_put(&self->ad_values, p, n);
    default:
        return 0;
    }
}

/* A plain FORMAT value into its column as the Python path encodes it (DP/GQ/AD), or only checked;
 * 1 done, 0 not plain, -1 error. */
static int encode_native(RecordEncoder *self, int code, long number, const char *p, Py_ssize_t n, Py_ssize_t n_alt) {
    long long value;
    Py_ssize_t size, present;
    if (code == FORMAT_NATIVE_CHECK_INTEGER || code == FORMAT_NATIVE_CHECK_FLOAT) {
        if (n == 1 && p[0] == '.') return 1;
        return scan_numbers(code == FORMAT_NATIVE_CHECK_INTEGER, number, n_alt, p, n, NULL, 0, &size, &present);
    }
    if (code == FORMAT_NATIVE_DEPTH || code == FORMAT_NATIVE_GQ || code == FORMAT_NATIVE_DEPTH_FLOAT || code == FORMAT_NATIVE_GQ_FLOAT) {
        double real;
        if (n == 1 && p[0] == '.') {
            value = -1;
        } else if (code == FORMAT_NATIVE_DEPTH || code == FORMAT_NATIVE_GQ) {
            if (!parse_vcf_int(p, n, &value)) return 0;
        } else {
            /* Python's round(): ties to even, which nearbyint() does in the default rounding mode. */
            if (!parse_vcf_float(p, n, &real) || !isfinite(real)) return 0;
            real = nearbyint(real);
            if (real < VCF_INT_MIN || real > INT_MAX_31) return 0;
            value = (long long)real;
        }
        int depth = code == FORMAT_NATIVE_DEPTH || code == FORMAT_NATIVE_DEPTH_FLOAT;
        return buf_put_varint(depth ? &self->depth : &self->quality, zigzag(value)) < 0 ? -1 : 1;
    }
    if (code != FORMAT_NATIVE_AD) return 0;
    if (n == 1 && p[0] == '.') return buf_put_varint(&self->ad_counts, 0) < 0 ? -1 : 1;
    char packed[MAX_LIST_VALUES * 10];
    int done = scan_numbers(1, number, n_alt, p, n, packed, 1, &size, &present);
    if (done <= 0) return done;
    if (buf_put_varint(&self->ad_counts, (uint64_t)varint_count(packed, size)) < 0 ||
        buf_put(&self->ad_values, packed, size) < 0)
        return -1;
    return 1;
}

/* Whether a column holds `samples` entries that are all zigzag(-1) (one 0x01 byte each). */
static int all_missing(const Buf *column, Py_ssize_t samples) {
    if (column->len != samples) return 0;
    for (Py_ssize_t i = 0; i < samples; i++)
        if (column->data[i] != 1) return 0;
    return 1;
}

/* A QUAL the caches missed, as the Python path encodes it; 1 done, 0 fall back, -1 error. */
static int encode_quality(Buf *b, const char *p, Py_ssize_t n) {
    double value;
    if (!parse_vcf_float(p, n, &value)) return 0;
    /* has_quality = true, then the double. */
    static const char head[] = VARIANT_MESSAGE_HAS_QUALITY_TAG "\x01" VARIANT_MESSAGE_QUALITY_TAG;
    if (buf_reserve(b, (Py_ssize_t)sizeof head - 1 + 8) < 0) return -1;
    memcpy(b->data + b->len, head, sizeof head - 1);
    b->len += (Py_ssize_t)sizeof head - 1;
    if (PyFloat_Pack8(value, b->data + b->len, 1) < 0) return -1;
    b->len += 8;
    return 1;
}

/* Appends the record's GenotypeColumns to self->tail, by the rules of _vcf_reader._genotype_columns;
 * 1 done, 0 fall back, -1 error. */
static int encode_samples(RecordEncoder *self, PyObject *layout, Py_ssize_t n_alt) {
    /* The reader's _Layout, a named tuple: its first five fields. */
    if (!PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) < 5) return 0;
    Py_ssize_t width = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout, 0));
    Py_ssize_t gt = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout, 1));
    if (PyErr_Occurred()) return -1;
    int check_ploidy = PyTuple_GET_ITEM(layout, 2) == Py_True;
    PyObject *by_alts = PyTuple_GET_ITEM(layout, 3);
    PyObject *natives = PyTuple_GET_ITEM(layout, 4);
    if (width < 1 || width > MAX_FORMAT_KEYS || !PyDict_CheckExact(by_alts) || !PyTuple_CheckExact(natives) ||
        PyTuple_GET_SIZE(natives) != width)
        return 0;
    int codes[MAX_FORMAT_KEYS];
    long numbers[MAX_FORMAT_KEYS];
    for (Py_ssize_t i = 0; i < width; i++) {
        PyObject *spec = PyTuple_GET_ITEM(natives, i);
        if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 2) return 0;
        codes[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
        numbers[i] = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
    }
    if (PyErr_Occurred()) return -1;
    PyObject *alt_key = PyLong_FromSsize_t(n_alt);
    if (!alt_key) return -1;
    PyObject *caches = PyDict_GetItemWithError(by_alts, alt_key);
    Py_DECREF(alt_key);
    if (!caches) return PyErr_Occurred() ? -1 : 0;
    if (!PyList_CheckExact(caches) || PyList_GET_SIZE(caches) != width) return 0;
    for (Py_ssize_t i = 0; i < width; i++)
        if (!PyDict_CheckExact(PyList_GET_ITEM(caches, i))) return 0;

    const char *starts[MAX_FORMAT_KEYS];
    Py_ssize_t lens[MAX_FORMAT_KEYS];
    Py_ssize_t samples = self->columns - 9;
    if (!samples) return 1; /* an encoder built with a FORMAT column but no sample fields */
    self->ploidy.len = self->alleles.len = self->depth.len = self->quality.len = 0;
    self->ad_counts.len = self->ad_values.len = 0;
    Py_ssize_t bitmap = (samples + 7) / 8;
    if (buf_reserve(&self->phased, bitmap) < 0) return -1;
    memset(self->phased.data, 0, bitmap);
    self->phased.len = 0;
    for (Py_ssize_t s = 0; s < samples; s++) {
        const char *p = self->field_start[9 + s];
        const char *end = p + self->field_len[9 + s];
        Py_ssize_t count = 0;
        for (;;) {
            const char *colon = memchr(p, ':', end - p);
            const char *stop = colon ? colon : end;
            if (count == width) return 0; /* more values than keys: the Python path reports it */
            starts[count] = p;
            lens[count] = stop - p;
            count++;
            if (!colon) break;
            p = colon + 1;
        }
        if (count != width) return 0; /* dropped trailing values: padded by the Python path */
        for (Py_ssize_t i = 0; i < width; i++) {
            if (i == gt) {
                /* GT's cached encoding: a phased byte, then the alleles' zigzag varints. */
                PyObject *value = cached_bytes(self, PyList_GET_ITEM(caches, i), starts[i], lens[i]);
                if (!value) return PyErr_Occurred() ? -1 : 0;
                const char *g = PyBytes_AS_STRING(value);
                Py_ssize_t size = PyBytes_GET_SIZE(value);
                if (size < 1) return 0;
                if (g[0]) self->phased.data[s >> 3] |= (char)(1 << (s & 7));
                if (buf_put_varint(&self->ploidy, (uint64_t)varint_count(g + 1, size - 1)) < 0 ||
                    buf_put(&self->alleles, g + 1, size - 1) < 0)
                    return -1;
                if (check_ploidy) {
                    /* A GT in a cache has been parsed, so its entry here is final: the memo may keep it. */
                    int odd = non_diploid(self, starts[i], lens[i]);
                    if (odd) return odd < 0 ? -1 : 0;
                }
                continue;
            }
            /* Native values first: parsing them is cheaper than a lookup that mostly misses. */
            int done = codes[i] == FORMAT_NATIVE_NONE
                           ? 0
                           : encode_native(self, codes[i], numbers[i], starts[i], lens[i], n_alt);
            if (done < 0) return -1;
            if (!done) {
                PyObject *value = cached_bytes(self, PyList_GET_ITEM(caches, i), starts[i], lens[i]);
                if (!value) return PyErr_Occurred() ? -1 : 0;
                if (put_stored(self, codes[i], value) < 0) return -1;
            }
        }
        /* No GT: one missing allele, as htslib reads it. */
        if (gt < 0 && (buf_put(&self->ploidy, "\x01", 1) < 0 || buf_put(&self->alleles, "\x01", 1) < 0)) return -1;
    }
    for (Py_ssize_t i = 0; i < bitmap; i++)
        if (self->phased.data[i]) self->phased.len = bitmap;
    if (all_missing(&self->depth, samples)) self->depth.len = 0;
    if (all_missing(&self->quality, samples)) self->quality.len = 0;
    if (!self->ad_values.len) self->ad_counts.len = 0;
    Buf *body = &self->columns_body;
    body->len = 0;
    if (buf_put(body, self->samples.data, self->samples.len) < 0 ||
        buf_put_packed(body, GENOTYPE_COLUMNS_PLOIDY_TAG, TAG_LEN(GENOTYPE_COLUMNS_PLOIDY_TAG), &self->ploidy) < 0 ||
        buf_put_packed(body, GENOTYPE_COLUMNS_ALLELES_TAG, TAG_LEN(GENOTYPE_COLUMNS_ALLELES_TAG), &self->alleles) < 0 ||
        buf_put_packed(body, GENOTYPE_COLUMNS_PHASED_TAG, TAG_LEN(GENOTYPE_COLUMNS_PHASED_TAG), &self->phased) < 0 ||
        buf_put_packed(body, GENOTYPE_COLUMNS_DEPTH_TAG, TAG_LEN(GENOTYPE_COLUMNS_DEPTH_TAG), &self->depth) < 0 ||
        buf_put_packed(body, GENOTYPE_COLUMNS_GENOTYPE_QUALITY_TAG, TAG_LEN(GENOTYPE_COLUMNS_GENOTYPE_QUALITY_TAG),
                       &self->quality) < 0 ||
        buf_put_packed(body, GENOTYPE_COLUMNS_ALLELE_DEPTH_COUNTS_TAG,
                       TAG_LEN(GENOTYPE_COLUMNS_ALLELE_DEPTH_COUNTS_TAG), &self->ad_counts) < 0 ||
        buf_put_packed(body, GENOTYPE_COLUMNS_ALLELE_DEPTHS_TAG, TAG_LEN(GENOTYPE_COLUMNS_ALLELE_DEPTHS_TAG),
                       &self->ad_values) < 0)
        return -1;
    if (buf_put(&self->tail, VARIANT_MESSAGE_GENOTYPES_TAG, TAG_LEN(VARIANT_MESSAGE_GENOTYPES_TAG)) < 0 ||
        buf_put_varint(&self->tail, (uint64_t)body->len) < 0 || buf_put(&self->tail, body->data, body->len) < 0)
        return -1;
    return 1;
}

static int encode_genotypes(RecordEncoder *self, Py_ssize_t n_alt) {
    PyObject *layout = cached(self, self->layouts, self->field_start[8], self->field_len[8]);
    if (!layout) return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(layout);
    int done = encode_samples(self, layout, n_alt);
    Py_DECREF(layout);
    return done;
}

/* INFO entries of a record the compiled encoder checks for a repeated key; a record with more
 * goes to the Python encoder. */
#define INFO_KEYS_CHECKED 256

/* Appends the INFO map entries to self->tail; 1 done, 0 fall back, -1 error. */
static int encode_info(RecordEncoder *self, Py_ssize_t n_alt) {
    const char *p = self->field_start[7];
    const char *end = p + self->field_len[7];
    if (end - p == 1 && p[0] == '.') return 1;
    PyObject *alt_key = PyLong_FromSsize_t(n_alt);
    if (!alt_key) return -1;
    PyObject *cache = PyDict_GetItemWithError(self->info, alt_key);
    Py_DECREF(alt_key);
    if (!cache) return PyErr_Occurred() ? -1 : 0;
    if (!PyDict_CheckExact(cache)) return 0;
    /* Each entry's key, to find one given twice (the Python encoder reports it). */
    const char *keys[INFO_KEYS_CHECKED];
    Py_ssize_t key_lens[INFO_KEYS_CHECKED];
    int n_keys = 0;
    for (;;) {
        const char *semi = memchr(p, ';', end - p);
        const char *stop = semi ? semi : end;
        const char *equals = memchr(p, '=', stop - p);
        Py_ssize_t key_len = (equals ? equals : stop) - p;
        if (n_keys == INFO_KEYS_CHECKED) return 0;
        for (int k = 0; k < n_keys; k++)
            if (key_lens[k] == key_len && memcmp(keys[k], p, (size_t)key_len) == 0) return 0;
        keys[n_keys] = p;
        key_lens[n_keys++] = key_len;
        PyObject *entry = cached_bytes(self, cache, p, stop - p);
        if (entry) {
            if (buf_put_bytes(&self->tail, entry) < 0) return -1;
        } else {
            if (PyErr_Occurred()) return -1;
            int done = encode_info_native(self, p, stop - p, n_alt);
            if (done <= 0) return done;
        }
        if (!semi) return 1;
        p = semi + 1;
    }
}

/* Writes the head and tail shared by every ALT of the record; 1 done, 0 fall back, -1 error. */
static int encode_shared(RecordEncoder *self, long long pos, PyObject *alt_entry) {
    const char **f = self->field_start;
    Py_ssize_t *len = self->field_len;
    int has_id = !(len[2] == 1 && f[2][0] == '.');
    /* A spaced ID is an error, a list of IDs is checked for empty and repeated ones: the Python encoder's. */
    if (has_id && (len[2] == 0 || memchr(f[2], ' ', len[2]) || memchr(f[2], ';', len[2]))) return 0;
    PyObject *chrom_field = PyDict_GetItemWithError(self->chrom_fields, self->chrom);
    if (!chrom_field) return PyErr_Occurred() ? -1 : 0;
    if (!PyBytes_CheckExact(chrom_field)) return 0;

    Buf *head = &self->head;
    head->len = 0;
    if (buf_put(head, VARIANT_MESSAGE_RECORD_INDEX_TAG, TAG_LEN(VARIANT_MESSAGE_RECORD_INDEX_TAG)) < 0 ||
        buf_put_varint(head, (uint64_t)(self->record_index + 1)) < 0)
        return -1;
    if (self->numbered &&
        (buf_put(head, VARIANT_MESSAGE_LINE_NUMBER_TAG, TAG_LEN(VARIANT_MESSAGE_LINE_NUMBER_TAG)) < 0 ||
         buf_put_varint(head, (uint64_t)(self->line_number + 1)) < 0))
        return -1;
    if (buf_put_bytes(head, chrom_field) < 0 ||
        buf_put(head, VARIANT_MESSAGE_POSITION_TAG, TAG_LEN(VARIANT_MESSAGE_POSITION_TAG)) < 0 ||
        buf_put_varint(head, (uint64_t)pos) < 0)
        return -1;
    if (has_id && (buf_put(head, VARIANT_MESSAGE_ID_TAG, TAG_LEN(VARIANT_MESSAGE_ID_TAG)) < 0 ||
                   buf_put_varint(head, (uint64_t)len[2]) < 0 || buf_put(head, f[2], len[2]) < 0))
        return -1;
    PyObject *ref = cached_bytes(self, self->refs, f[3], len[3]);
    if (!ref) return PyErr_Occurred() ? -1 : 0;
    if (buf_put_bytes(head, ref) < 0) return -1;

    Buf *tail = &self->tail;
    tail->len = 0;
    if (buf_put_bytes(tail, PyTuple_GET_ITEM(alt_entry, 2)) < 0) return -1;
    PyObject *qual = cached_bytes(self, self->quals, f[5], len[5]);
    if (qual) {
        if (buf_put_bytes(tail, qual) < 0) return -1;
    } else {
        if (PyErr_Occurred()) return -1;
        int done = encode_quality(tail, f[5], len[5]);
        if (done <= 0) return done;
    }
    PyObject *filters = cached_bytes(self, self->filters, f[6], len[6]);
    if (!filters) return PyErr_Occurred() ? -1 : 0;
    if (buf_put_bytes(tail, filters) < 0) return -1;
    Py_ssize_t n_alt = PyList_GET_SIZE(PyTuple_GET_ITEM(alt_entry, 1));
    int done = encode_info(self, n_alt);
    if (done <= 0) return done;
    if (self->columns > 8) {
        done = encode_genotypes(self, n_alt);
        if (done <= 0) return done;
    }
    return buf_put_bytes(tail, self->suffix) < 0 ? -1 : 1;
}

/* The ALT column's cached (alleles, ALT fields, all-ALTs field), as a new reference; NULL to fall back. */
static PyObject *alt_entry(RecordEncoder *self) {
    PyObject *entry = cached(self, self->alts, self->field_start[4], self->field_len[4]);
    if (!entry || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) return NULL;
    PyObject *fields = PyTuple_GET_ITEM(entry, 1);
    if (!PyList_CheckExact(fields) || !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 2))) return NULL;
    /* REF-only records are counted by the Python path. An empty field is a gVCF placeholder. */
    if (PyList_GET_SIZE(fields) == 0) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fields); i++)
        if (!PyBytes_CheckExact(PyList_GET_ITEM(fields, i))) return NULL;
    return Py_NewRef(entry);
}

/* hashlib.blake2b(key, digest_size=16).hexdigest() into out[32], by hashlib itself. */
static int correlation_digest(RecordEncoder *self, const char *key, Py_ssize_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    PyObject *data = PyBytes_FromStringAndSize(key, n);
    if (!data) return -1;
    PyObject *args[2] = {data, self->digest_size};
    PyObject *hasher = PyObject_Vectorcall(self->blake2b, args, 1, self->digest_keywords);
    Py_DECREF(data);
    if (!hasher) return -1;
    PyObject *digest = PyObject_CallMethodNoArgs(hasher, self->digest_method);
    Py_DECREF(hasher);
    if (!digest) return -1;
    if (!PyBytes_CheckExact(digest) || PyBytes_GET_SIZE(digest) != 16) {
        Py_DECREF(digest);
        PyErr_SetString(PyExc_RuntimeError, "blake2b gave a digest of an unexpected size");
        return -1;
    }
    const uint8_t *bytes = (const uint8_t *)PyBytes_AS_STRING(digest);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    Py_DECREF(digest);
    return 0;
}

/* One length-prefixed VariantMessage for ALT number alt_index. */
static PyObject *variant_entry(RecordEncoder *self, Py_ssize_t alt_index, PyObject *alt_field) {
    char key[256];
    char digest[32];
    Py_ssize_t prefix_len = PyBytes_GET_SIZE(self->prefix);
    if (prefix_len > (Py_ssize_t)sizeof key - 48) {
        PyErr_SetString(PyExc_ValueError, "tenant and file id too long for the correlation key");
        return NULL;
    }
    memcpy(key, PyBytes_AS_STRING(self->prefix), prefix_len);
    int written = snprintf(key + prefix_len, sizeof key - prefix_len, "%lld:%zd", self->record_index + 1, alt_index);
    if (correlation_digest(self, key, prefix_len + written, digest) < 0) return NULL;

    Py_ssize_t job_len = PyBytes_GET_SIZE(self->job_fields);
    Py_ssize_t alt_len = PyBytes_GET_SIZE(alt_field);
    Py_ssize_t index_len = alt_index ? (Py_ssize_t)TAG_LEN(VARIANT_MESSAGE_ALT_INDEX_TAG) + varint_size((uint64_t)alt_index) : 0;
    Py_ssize_t cid_len = (Py_ssize_t)TAG_LEN(VARIANT_MESSAGE_CORRELATION_ID_TAG) + 1 + 32;
    Py_ssize_t body = cid_len + job_len + self->head.len + alt_len + index_len + self->tail.len;
    PyObject *entry = PyBytes_FromStringAndSize(
        NULL, (Py_ssize_t)TAG_LEN(VARIANT_BATCH_VARIANTS_TAG) + varint_size((uint64_t)body) + body);
    if (!entry) return NULL;
    char *out = PyBytes_AS_STRING(entry);
    memcpy(out, VARIANT_BATCH_VARIANTS_TAG, TAG_LEN(VARIANT_BATCH_VARIANTS_TAG));
    out += TAG_LEN(VARIANT_BATCH_VARIANTS_TAG);
    out += varint_into(out, (uint64_t)body);
    memcpy(out, VARIANT_MESSAGE_CORRELATION_ID_TAG, TAG_LEN(VARIANT_MESSAGE_CORRELATION_ID_TAG));
    out += TAG_LEN(VARIANT_MESSAGE_CORRELATION_ID_TAG);
    *out++ = 32; /* the length of 32 hex digits, a one-byte varint */
    memcpy(out, digest, 32);
    out += 32;
    memcpy(out, PyBytes_AS_STRING(self->job_fields), job_len);
    out += job_len;
    memcpy(out, self->head.data, self->head.len);
    out += self->head.len;
    memcpy(out, PyBytes_AS_STRING(alt_field), alt_len);
    out += alt_len;
    if (alt_index) {
        memcpy(out, VARIANT_MESSAGE_ALT_INDEX_TAG, TAG_LEN(VARIANT_MESSAGE_ALT_INDEX_TAG));
        out += TAG_LEN(VARIANT_MESSAGE_ALT_INDEX_TAG);
        out += varint_into(out, (uint64_t)alt_index);
    }
    memcpy(out, self->tail.data, self->tail.len);
    return entry;
}

static PyObject *RecordEncoder_encode(RecordEncoder *self, PyObject *line) {
    if (!PyUnicode_CheckExact(line) || !PyUnicode_IS_COMPACT_ASCII(line) || !PyUnicode_IS_COMPACT_ASCII(self->chrom))
        Py_RETURN_NONE;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(line);
    Py_ssize_t n = PyUnicode_GET_LENGTH(line);
    if (n == 0 || s[n - 1] != '\n') Py_RETURN_NONE;
    n--;
    const char *p = s;
    const char *end = s + n;
    Py_ssize_t count = 0;
    for (;;) {
        const char *tab = memchr(p, '\t', end - p);
        const char *stop = tab ? tab : end;
        if (count == self->columns) Py_RETURN_NONE;
        self->field_start[count] = p;
        self->field_len[count] = stop - p;
        count++;
        if (!tab) break;
        p = tab + 1;
    }
    if (count != self->columns) Py_RETURN_NONE;

    const char **f = self->field_start;
    Py_ssize_t *len = self->field_len;
    if (len[0] != PyUnicode_GET_LENGTH(self->chrom) || memcmp(f[0], PyUnicode_1BYTE_DATA(self->chrom), len[0]))
        Py_RETURN_NONE;
    if (len[1] == 0) Py_RETURN_NONE;
    long long pos = 0;
    for (Py_ssize_t i = 0; i < len[1]; i++) {
        char c = f[1][i];
        if (c < '0' || c > '9') Py_RETURN_NONE;
        pos = pos * 10 + (c - '0');
        if (pos > INT_MAX_31) Py_RETURN_NONE;
    }
    if (pos < self->last_pos) Py_RETURN_NONE;

    /* Held across the lookups below, which may evict it from the memo. */
    PyObject *alts = alt_entry(self);
    if (!alts) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    int done = encode_shared(self, pos, alts);
    if (done <= 0) {
        Py_DECREF(alts);
        if (done < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *alt_fields = PyTuple_GET_ITEM(alts, 1);
    Py_ssize_t n_alt = PyList_GET_SIZE(alt_fields);
    /* Every ALT's message repeats the record: check the total before building any (as the Python path does). */
    if (self->max_record_bytes > 0 &&
        (long long)n_alt * (long long)(self->head.len + self->tail.len + PyBytes_GET_SIZE(self->job_fields) + 64) >
            self->max_record_bytes) {
        Py_DECREF(alts);
        Py_RETURN_NONE;
    }
    PyObject *entries = PyList_New(0);
    if (!entries) {
        Py_DECREF(alts);
        return NULL;
    }
    long long placeholders = 0;
    for (Py_ssize_t a = 0; a < n_alt; a++) {
        PyObject *alt_field = PyList_GET_ITEM(alt_fields, a);
        /* An empty field is a gVCF placeholder (<*>, <NON_REF>): no variant, the others keep their index. */
        if (PyBytes_GET_SIZE(alt_field) == 0) {
            placeholders++;
            continue;
        }
        PyObject *entry = variant_entry(self, a, alt_field);
        if (!entry || PyList_Append(entries, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(entries);
            Py_DECREF(alts);
            return NULL;
        }
        Py_DECREF(entry);
    }
    Py_DECREF(alts);
    /* Only <*>/<NON_REF>: a gVCF reference block, checked like any record and not a variant. */
    if (PyList_GET_SIZE(entries) == 0)
        self->reference_blocks++;
    else
        self->placeholder_alleles += placeholders;
    self->line_number++;
    self->record_index++;
    self->last_pos = pos;
    self->position = pos;
    return entries;
}

static void memo_clear(RecordEncoder *self) {
    if (!self->memo) return;
    for (Py_ssize_t i = 0; i < MEMO_SLOTS; i++) {
        Py_CLEAR(self->memo[i].cache);
        Py_CLEAR(self->memo[i].value);
        self->memo[i].len = 0;
    }
}

static int RecordEncoder_init(RecordEncoder *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"columns", "numbered", "prefix", "job_fields", "sample_fields", "chrom_fields",
                            "refs", "alts", "quals", "filters", "info", "layouts", "non_diploid",
                            "info_natives", NULL};
    Py_ssize_t columns;
    int numbered;
    PyObject *prefix, *job_fields, *sample_fields, *chrom_fields, *refs, *alts, *quals, *filters, *info,
        *layouts, *non_diploid, *info_natives;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$npSSO!O!O!O!O!O!O!O!O!O!", names, &columns, &numbered,
                                     &prefix, &job_fields, &PyTuple_Type, &sample_fields, &PyDict_Type,
                                     &chrom_fields, &PyDict_Type, &refs, &PyDict_Type, &alts, &PyDict_Type,
                                     &quals, &PyDict_Type, &filters, &PyDict_Type, &info, &PyDict_Type,
                                     &layouts, &PyDict_Type, &non_diploid, &PyDict_Type, &info_natives))
        return -1;
    if (columns < 8 || (columns > 8 && PyTuple_GET_SIZE(sample_fields) != columns - 9)) {
        PyErr_SetString(PyExc_ValueError, "columns must be 8, or 9 plus one per sample field");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(sample_fields); i++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(sample_fields, i))) {
            PyErr_SetString(PyExc_TypeError, "sample_fields must hold bytes");
            return -1;
        }
    }
    PyMem_Free(self->field_start);
    PyMem_Free(self->field_len);
    self->field_start = PyMem_New(const char *, columns);
    self->field_len = PyMem_New(Py_ssize_t, columns);
    if (!self->field_start || !self->field_len) {
        PyErr_NoMemory();
        return -1;
    }
    memo_clear(self);
    if (!self->memo) {
        self->memo = PyMem_Calloc(MEMO_SLOTS, sizeof(MemoSlot));
        if (!self->memo) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->columns = columns;
    self->numbered = numbered;
    Py_XSETREF(self->prefix, Py_NewRef(prefix));
    Py_XSETREF(self->job_fields, Py_NewRef(job_fields));
    Py_XSETREF(self->sample_fields, Py_NewRef(sample_fields));
    self->samples.len = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(sample_fields); i++)
        if (buf_put_bytes(&self->samples, PyTuple_GET_ITEM(sample_fields, i)) < 0) return -1;
    Py_XSETREF(self->chrom_fields, Py_NewRef(chrom_fields));
    Py_XSETREF(self->refs, Py_NewRef(refs));
    Py_XSETREF(self->alts, Py_NewRef(alts));
    Py_XSETREF(self->quals, Py_NewRef(quals));
    Py_XSETREF(self->filters, Py_NewRef(filters));
    Py_XSETREF(self->info, Py_NewRef(info));
    Py_XSETREF(self->layouts, Py_NewRef(layouts));
    Py_XSETREF(self->non_diploid, Py_NewRef(non_diploid));
    Py_XSETREF(self->info_natives, Py_NewRef(info_natives));
    Py_XSETREF(self->chrom, PyUnicode_FromString(""));
    Py_XSETREF(self->suffix, PyBytes_FromString(""));
    if (!self->chrom || !self->suffix) return -1;
    PyObject *hashlib = PyImport_ImportModule("hashlib");
    if (!hashlib) return -1;
    Py_XSETREF(self->blake2b, PyObject_GetAttrString(hashlib, "blake2b"));
    Py_DECREF(hashlib);
    Py_XSETREF(self->digest_keywords, Py_BuildValue("(s)", "digest_size"));
    Py_XSETREF(self->digest_size, PyLong_FromLong(16));
    Py_XSETREF(self->digest_method, PyUnicode_InternFromString("digest"));
    if (!self->blake2b || !self->digest_keywords || !self->digest_size || !self->digest_method) return -1;
    self->line_number = 0;
    self->record_index = -1;
    self->last_pos = -1;
    self->placeholder_alleles = 0;
    self->reference_blocks = 0;
    self->position = 0;
    return 0;
}

static int RecordEncoder_traverse(RecordEncoder *self, visitproc visit, void *arg) {
    Py_VISIT(self->prefix);
    Py_VISIT(self->job_fields);
    Py_VISIT(self->sample_fields);
    Py_VISIT(self->chrom_fields);
    Py_VISIT(self->refs);
    Py_VISIT(self->alts);
    Py_VISIT(self->quals);
    Py_VISIT(self->filters);
    Py_VISIT(self->info);
    Py_VISIT(self->layouts);
    Py_VISIT(self->non_diploid);
    Py_VISIT(self->info_natives);
    Py_VISIT(self->chrom);
    Py_VISIT(self->suffix);
    Py_VISIT(self->blake2b);
    Py_VISIT(self->digest_keywords);
    Py_VISIT(self->digest_size);
    Py_VISIT(self->digest_method);
    return 0;
}

static int RecordEncoder_clear(RecordEncoder *self) {
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->job_fields);
    Py_CLEAR(self->sample_fields);
    Py_CLEAR(self->chrom_fields);
    Py_CLEAR(self->refs);
    Py_CLEAR(self->alts);
    Py_CLEAR(self->quals);
    Py_CLEAR(self->filters);
    Py_CLEAR(self->info);
    Py_CLEAR(self->layouts);
    Py_CLEAR(self->non_diploid);
    Py_CLEAR(self->info_natives);
    Py_CLEAR(self->chrom);
    Py_CLEAR(self->suffix);
    Py_CLEAR(self->blake2b);
    Py_CLEAR(self->digest_keywords);
    Py_CLEAR(self->digest_size);
    Py_CLEAR(self->digest_method);
    return 0;
}

static void RecordEncoder_dealloc(RecordEncoder *self) {
    PyObject_GC_UnTrack(self);
    RecordEncoder_clear(self);
    memo_clear(self);
    PyMem_Free(self->memo);
    Buf *buffers[] = {&self->columns_body, &self->samples, &self->ploidy, &self->alleles, &self->phased,
                      &self->depth, &self->quality, &self->ad_counts, &self->ad_values};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) PyMem_Free(buffers[i]->data);
    PyMem_Free(self->field_start);
    PyMem_Free(self->field_len);
    PyMem_Free(self->head.data);
    PyMem_Free(self->tail.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *RecordEncoder_get_chrom(RecordEncoder *self, void *closure) {
    return Py_NewRef(self->chrom);
}

static int RecordEncoder_set_chrom(RecordEncoder *self, PyObject *value, void *closure) {
    if (!value || !PyUnicode_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "chrom must be a str");
        return -1;
    }
    Py_SETREF(self->chrom, Py_NewRef(value));
    return 0;
}

static PyObject *RecordEncoder_get_suffix(RecordEncoder *self, void *closure) {
    return Py_NewRef(self->suffix);
}

static int RecordEncoder_set_suffix(RecordEncoder *self, PyObject *value, void *closure) {
    if (!value || !PyBytes_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "suffix must be bytes");
        return -1;
    }
    Py_SETREF(self->suffix, Py_NewRef(value));
    return 0;
}

static PyMethodDef RecordEncoder_methods[] = {
    {"encode", (PyCFunction)RecordEncoder_encode, METH_O,
     "encode(line) -> list of length-prefixed VariantMessages, or None to use the Python path"},
    {NULL, NULL, 0, NULL}};

static PyMemberDef RecordEncoder_members[] = {
    {"line_number", T_LONGLONG, offsetof(RecordEncoder, line_number), 0, "line of the last record read"},
    {"record_index", T_LONGLONG, offsetof(RecordEncoder, record_index), 0, "index of the last record read"},
    {"last_pos", T_LONGLONG, offsetof(RecordEncoder, last_pos), 0, "POS of the last record of this contig"},
    {"placeholder_alleles", T_LONGLONG, offsetof(RecordEncoder, placeholder_alleles), 0,
     "gVCF <*>/<NON_REF> ALTs skipped in records that also have a real ALT"},
    {"reference_blocks", T_LONGLONG, offsetof(RecordEncoder, reference_blocks), 0,
     "gVCF records whose only ALTs are <*>/<NON_REF>"},
    {"position", T_LONGLONG, offsetof(RecordEncoder, position), 0, "POS of the last record encoded"},
    {"max_record_bytes", T_LONGLONG, offsetof(RecordEncoder, max_record_bytes), 0,
     "bound on one record's encoded messages (0: none)"},
    {NULL, 0, 0, 0, NULL}};

static PyGetSetDef RecordEncoder_getset[] = {
    {"chrom", (getter)RecordEncoder_get_chrom, (setter)RecordEncoder_set_chrom, "the current contig", NULL},
    {"suffix", (getter)RecordEncoder_get_suffix, (setter)RecordEncoder_set_suffix,
     "bytes ending every message of the current batch", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject RecordEncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vcf_agent.services.ingest._record_encoder.RecordEncoder",
    .tp_basicsize = sizeof(RecordEncoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Encodes VCF record lines whose values are all in the reader's caches.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RecordEncoder_init,
    .tp_dealloc = (destructor)RecordEncoder_dealloc,
    .tp_traverse = (traverseproc)RecordEncoder_traverse,
    .tp_clear = (inquiry)RecordEncoder_clear,
    .tp_methods = RecordEncoder_methods,
    .tp_members = RecordEncoder_members,
    .tp_getset = RecordEncoder_getset,
};

static PyMethodDef module_methods[] = {{NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_record_encoder", "The compiled fast path of the VCF record encoder.", -1,
    module_methods};

PyMODINIT_FUNC PyInit__record_encoder(void) {
    if (PyType_Ready(&RecordEncoderType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (!module) return NULL;
    if (PyModule_AddObjectRef(module, "RecordEncoder", (PyObject *)&RecordEncoderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
