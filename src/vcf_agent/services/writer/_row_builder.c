/*
 * The writer's row builder: serialized DatabaseWriteBatch payloads in, Arrow
 * column buffers out, without a protobuf object per field.
 *
 * Walking the protos from Python cost about 25 us per variant and held the GIL
 * while the graph engine, working on the previous batch, needed it back to
 * read its Arrow input; the two stalled each other. Here a payload is checked
 * and indexed once when it arrives (add), and the columns are written later
 * (take) with the GIL released.
 *
 * add() first validates the whole payload against the schema handed to the
 * Collector when it is made, built from the generated descriptors: every length, varint and
 * wire type, and UTF-8 in every proto3 string field at any depth, as upb's
 * parser does, so a payload is rejected here exactly when the Python runtime
 * would reject it. A second walk records where each stored field lies
 * (views into the payload, which the collector keeps alive), applying
 * protobuf's rules: a repeated singular field keeps its last value, repeated
 * singular messages merge, repeated int32 fields come packed or not, and a
 * known field with the wrong wire type is an unknown field.
 *
 * take() keeps the last write per correlation id (in first-seen order) and the
 * last answer per provider within a write, as tests/writer/_reference_rows.py
 * states in Python, and returns plain bytes that _rows.py wraps as Arrow
 * arrays.
 *
 * Each Collector owns everything it reads: its schema and status names are
 * copied into it at construction and the reason of a failed add() is kept in
 * it, so there is no module state, and take() with the GIL released touches
 * nothing Python may change. Field numbers come from the generated
 * wire_numbers.h. The extension is optional: _row_builder_py.py is its twin.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_wire.h"
#include "wire_numbers.h"

/* ---- growable byte buffers and typed vectors on top of them ---- */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n))
        return -1;
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

#define VEC_LEN(buf, type) ((Py_ssize_t)((buf).len / sizeof(type)))
#define VEC_AT(buf, type, i) (((type *)(buf).p)[i])

/* ---- the schema, from the generated descriptors (the Collector's arguments) ---- */

typedef struct {
    uint32_t number;
    int kind;
    int repeated;
    int child;
} FieldSpec;

typedef struct {
    FieldSpec *fields;
    Py_ssize_t count;
    char *name;
} MessageSpec;

/* A status name, copied out of its Python string. */
typedef struct {
    const char *text;
    Py_ssize_t len;
} Name;

static void free_messages(MessageSpec *specs, Py_ssize_t count) {
    for (Py_ssize_t m = 0; specs != NULL && m < count; m++) {
        PyMem_Free(specs[m].fields);
        PyMem_Free(specs[m].name);
    }
    PyMem_Free(specs);
}

/* ---- what add() records: views into the payloads ---- */

typedef struct {
    const char *p;
    Py_ssize_t n;
} View;

/* One call as emit_call reads it, assembled from its write's columns as it is emitted. */
typedef struct {
    View sample;
    Py_ssize_t alleles_start, alleles_count, depths_start, depths_count;
    int phased;
    int32_t depth, quality;
} Call;

/* A timestamp in microseconds; `overflow` when it does not fit in int64 (then saturated). */
typedef struct {
    int64_t us;
    int overflow;
} Micros;

typedef struct {
    View whole, provider, model, classification, error, gene, variant_class;
    int32_t status;
    double confidence;
    int64_t done_seconds;
    int32_t done_nanos;
    Micros done;
} Result;

typedef struct {
    View cid, job, tenant, classification, tier;
    View file_id, source_name, chrom, ref, alt, variant_id;
    int partial, has_quality;
    int32_t alt_index;
    int64_t record_index, position, ts_seconds;
    int32_t ts_nanos;
    Micros stamped;
    double quality;
    Py_ssize_t missing_start, missing_count, filters_start, filters_count, results_start, results_count;
    /* The write's calls, where its GenotypeColumns lie in the collector's column arenas: samples
     * from `calls_start`, each other column from its start or -1 when the write has none of it.
     * Calls are read from the columns when emitted, not copied into a per-genotype struct first:
     * measured on 500-sample batches, add() went from 92 to 51 ns per genotype, and the
     * 2,504-sample cohort's writer from 209.7 to 200.0 CPU seconds. */
    Py_ssize_t calls_start, calls_count, ploidy_start, depth_start, quality_start, counts_start;
    Py_ssize_t alleles_start, depths_start;
    View phased;
} Write;

typedef struct {
    PyObject_HEAD
    PyObject *payloads; /* list: keeps every view's memory alive */
    Buf writes, results, missing, filters, alleles, depths;
    /* Every write's GenotypeColumns, each write's merged over its occurrences as protobuf merges
     * them; `gt_phased` is the write being read's. */
    Buf gt_samples, gt_ploidy, gt_depth, gt_quality, gt_counts;
    View gt_phased;
    int busy;
    /* The schema (messages[0] is DatabaseWriteBatch) and the status names, indexed by
     * AnalysisResult.Status, owned by this collector. */
    MessageSpec *messages;
    Py_ssize_t message_count;
    Name *statuses;
    Py_ssize_t status_count;
    Name unknown;
    /* Why the last add() failed. */
    const char *error;
    char error_text[200];
} Collector;

/* Records why the field walk stopped; returns -1 for the caller to pass on. */
static int walk_failed(Collector *c, const Field *f) {
    c->error = f->error;
    return -1;
}

static const FieldSpec *find_field(const Collector *c, int message, uint32_t number) {
    const MessageSpec *spec = &c->messages[message];
    for (Py_ssize_t i = 0; i < spec->count; i++)
        if (spec->fields[i].number == number)
            return &spec->fields[i];
    return NULL;
}

static int packed_valid(const FieldSpec *spec, const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    switch (spec->kind) {
    case WIRE_CHECK_VARINT:
        while (p < end) {
            uint64_t v;
            if (read_varint(&p, end, 10, &v))
                return 0;
        }
        return 1;
    case WIRE_CHECK_FIXED64:
        return n % 8 == 0;
    case WIRE_CHECK_FIXED32:
        return n % 4 == 0;
    default:
        return 1;
    }
}

static int validate(Collector *c, const uint8_t *p, const uint8_t *end, int message, int depth) {
    if (depth > 64) {
        c->error = "messages nested too deeply";
        return -1;
    }
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.wire != WIRE_LEN)
            continue;
        const FieldSpec *spec = find_field(c, message, f.number);
        if (spec == NULL)
            continue;
        if (spec->kind == WIRE_CHECK_STRING && !utf8_valid(f.data, f.len)) {
            snprintf(c->error_text, sizeof c->error_text, "invalid UTF-8 in field %u of %s", f.number,
                     c->messages[message].name);
            c->error = c->error_text;
            return -1;
        }
        if (spec->kind == WIRE_CHECK_MESSAGE && validate(c, f.data, f.data + f.len, spec->child, depth + 1))
            return -1;
        if (spec->repeated && !packed_valid(spec, f.data, f.len)) {
            snprintf(c->error_text, sizeof c->error_text, "malformed packed field %u of %s", f.number,
                     c->messages[message].name);
            c->error = c->error_text;
            return -1;
        }
    }
    return more < 0 ? walk_failed(c, &f) : more;
}

static View view_of(const Field *f) {
    View v = {(const char *)f->data, (Py_ssize_t)f->len};
    return v;
}

/* Nanos floor-divided as Python does, so a negative value rounds as the reference does. */
static Micros timestamp_us(int64_t seconds, int32_t nanos) {
    Micros m = {0, 0};
    int64_t micros = nanos / 1000;
    if (nanos % 1000 < 0)
        micros -= 1;
    int64_t scaled;
    if (__builtin_mul_overflow(seconds, (int64_t)1000000, &scaled) ||
        __builtin_add_overflow(scaled, micros, &m.us)) {
        m.overflow = 1;
        m.us = seconds < 0 ? INT64_MIN : INT64_MAX;
    }
    return m;
}

static int later(Micros a, Micros b) {
    /* On a saturated tie the overflowed value is the larger one. */
    return a.us > b.us || (a.us == b.us && a.overflow && !b.overflow && a.us > 0);
}

static int view_eq(View a, View b) {
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, (size_t)a.n) == 0);
}

/* The answer kept for the provider first seen at i (its last one); NULL when i is not a first sighting. */
static const Result *kept_result(const Result *results, Py_ssize_t count, Py_ssize_t i) {
    for (Py_ssize_t k = 0; k < i; k++)
        if (view_eq(results[k].provider, results[i].provider))
            return NULL;
    for (Py_ssize_t k = count - 1; k > i; k--)
        if (view_eq(results[k].provider, results[i].provider))
            return &results[k];
    return &results[i];
}

/* updated_at: the latest of the variant's timestamp and its kept answers' completion. */
static Micros write_updated(const Buf *results_arena, const Write *w) {
    const Result *results = &VEC_AT(*results_arena, Result, w->results_start);
    Micros latest = w->stamped;
    for (Py_ssize_t i = 0; i < w->results_count; i++) {
        const Result *r = kept_result(results, w->results_count, i);
        if (r != NULL && later(r->done, latest))
            latest = r->done;
    }
    return latest;
}

static int read_timestamp(Collector *c, const uint8_t *p, const uint8_t *end, int64_t *seconds, int32_t *nanos) {
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.wire != WIRE_VARINT)
            continue;
        if (f.number == TIMESTAMP_SECONDS)
            *seconds = (int64_t)f.value;
        else if (f.number == TIMESTAMP_NANOS)
            *nanos = (int32_t)f.value;
    }
    return more < 0 ? walk_failed(c, &f) : more;
}

/* A sint32 or uint32 value as protobuf reads it from a varint: its low 32 bits. */
static int32_t sint32_of(uint64_t raw) {
    uint32_t bits = (uint32_t)raw;
    return (int32_t)((bits >> 1) ^ (0u - (bits & 1)));
}

/* Appends one occurrence of a repeated sint32 (`zigzag`) or uint32 field, packed or not, as int32s. */
static int push_32s(Buf *into, const Field *f, int zigzag) {
    if (f->wire == WIRE_VARINT) {
        int32_t v = zigzag ? sint32_of(f->value) : (int32_t)(uint32_t)f->value;
        return buf_put(into, &v, sizeof v);
    }
    const uint8_t *p = f->data, *end = f->data + f->len;
    while (p < end) {
        uint64_t raw;
        if (read_varint(&p, end, 10, &raw))
            return -1; /* validated already */
        int32_t v = zigzag ? sint32_of(raw) : (int32_t)(uint32_t)raw;
        if (buf_put(into, &v, sizeof v))
            return -1;
    }
    return 0;
}

/* One occurrence of VariantMessage.genotypes, merged into the write's columns. A known field with
 * the wrong wire type is an unknown field, as protobuf reads it. */
static int read_genotype_columns(Collector *c, const uint8_t *p, const uint8_t *end) {
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        int len = f.wire == WIRE_LEN, scalar = len || f.wire == WIRE_VARINT;
        int failed = 0;
        switch (f.number) {
        case GENOTYPE_COLUMNS_SAMPLES:
            if (len) {
                View v = view_of(&f);
                failed = buf_put(&c->gt_samples, &v, sizeof v);
            }
            break;
        case GENOTYPE_COLUMNS_PHASED:
            if (len)
                c->gt_phased = view_of(&f);
            break;
        case GENOTYPE_COLUMNS_PLOIDY:
            failed = scalar && push_32s(&c->gt_ploidy, &f, 0);
            break;
        case GENOTYPE_COLUMNS_ALLELES:
            failed = scalar && push_32s(&c->alleles, &f, 1);
            break;
        case GENOTYPE_COLUMNS_DEPTH:
            failed = scalar && push_32s(&c->gt_depth, &f, 1);
            break;
        case GENOTYPE_COLUMNS_GENOTYPE_QUALITY:
            failed = scalar && push_32s(&c->gt_quality, &f, 1);
            break;
        case GENOTYPE_COLUMNS_ALLELE_DEPTH_COUNTS:
            failed = scalar && push_32s(&c->gt_counts, &f, 0);
            break;
        case GENOTYPE_COLUMNS_ALLELE_DEPTHS:
            failed = scalar && push_32s(&c->depths, &f, 1);
            break;
        }
        if (failed)
            return -1;
    }
    return more < 0 ? walk_failed(c, &f) : more;
}

/* Refuses a write whose columns disagree (as vcf_agent.schema.genotype_calls does, in its words). */
static int columns_refused(Collector *c, const char *column, Py_ssize_t entries, Py_ssize_t samples) {
    snprintf(c->error_text, sizeof c->error_text, "GenotypeColumns.%s has %zd entries for %zd samples", column,
             entries, samples);
    c->error = c->error_text;
    return -1;
}

/* Checks the write's merged columns against each other and records where they lie; -1 with the
 * reason when they disagree. */
static int check_genotype_columns(Collector *c, Write *w) {
    Py_ssize_t n = VEC_LEN(c->gt_samples, View) - w->calls_start;
    Py_ssize_t ploidies = VEC_LEN(c->gt_ploidy, int32_t) - w->ploidy_start;
    Py_ssize_t depths = VEC_LEN(c->gt_depth, int32_t) - w->depth_start;
    Py_ssize_t qualities = VEC_LEN(c->gt_quality, int32_t) - w->quality_start;
    Py_ssize_t counts = VEC_LEN(c->gt_counts, int32_t) - w->counts_start;
    if (ploidies && ploidies != n)
        return columns_refused(c, "ploidy", ploidies, n);
    if (depths && depths != n)
        return columns_refused(c, "depth", depths, n);
    if (qualities && qualities != n)
        return columns_refused(c, "genotype_quality", qualities, n);
    if (counts && counts != n)
        return columns_refused(c, "allele_depth_counts", counts, n);
    if (c->gt_phased.n && c->gt_phased.n != (n + 7) / 8) {
        snprintf(c->error_text, sizeof c->error_text, "GenotypeColumns.phased has %zd bytes for %zd samples",
                 c->gt_phased.n, n);
        c->error = c->error_text;
        return -1;
    }
    uint64_t allele_total = 0, depth_total = 0;
    for (Py_ssize_t i = 0; i < ploidies; i++)
        allele_total += (uint32_t)VEC_AT(c->gt_ploidy, int32_t, w->ploidy_start + i);
    for (Py_ssize_t i = 0; i < counts; i++)
        depth_total += (uint32_t)VEC_AT(c->gt_counts, int32_t, w->counts_start + i);
    if (allele_total != (uint64_t)(VEC_LEN(c->alleles, int32_t) - w->alleles_start)) {
        c->error = "GenotypeColumns.alleles does not hold the sum of ploidy";
        return -1;
    }
    if (depth_total != (uint64_t)(VEC_LEN(c->depths, int32_t) - w->depths_start)) {
        c->error = "GenotypeColumns.allele_depths does not hold the sum of allele_depth_counts";
        return -1;
    }
    w->calls_count = n;
    w->phased = c->gt_phased;
    if (!ploidies)
        w->ploidy_start = -1;
    if (!depths)
        w->depth_start = -1;
    if (!qualities)
        w->quality_start = -1;
    if (!counts)
        w->counts_start = -1;
    return 0;
}

static int read_variant(Collector *c, Write *w, const uint8_t *p, const uint8_t *end) {
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.wire == WIRE_LEN) {
            switch (f.number) {
            case VARIANT_MESSAGE_FILE_ID: w->file_id = view_of(&f); break;
            case VARIANT_MESSAGE_CHROMOSOME: w->chrom = view_of(&f); break;
            case VARIANT_MESSAGE_ID: w->variant_id = view_of(&f); break;
            case VARIANT_MESSAGE_REFERENCE: w->ref = view_of(&f); break;
            case VARIANT_MESSAGE_ALTERNATE: w->alt = view_of(&f); break;
            case VARIANT_MESSAGE_SOURCE_NAME: w->source_name = view_of(&f); break;
            case VARIANT_MESSAGE_FILTERS: {
                View v = view_of(&f);
                if (buf_put(&c->filters, &v, sizeof v))
                    return -1;
                break;
            }
            case VARIANT_MESSAGE_GENOTYPES:
                if (read_genotype_columns(c, f.data, f.data + f.len))
                    return -1;
                break;
            case VARIANT_MESSAGE_TIMESTAMP:
                if (read_timestamp(c, f.data, f.data + f.len, &w->ts_seconds, &w->ts_nanos))
                    return -1;
                break;
            }
        } else if (f.wire == WIRE_VARINT) {
            switch (f.number) {
            case VARIANT_MESSAGE_RECORD_INDEX: w->record_index = (int64_t)f.value; break;
            case VARIANT_MESSAGE_POSITION: w->position = (int64_t)f.value; break;
            case VARIANT_MESSAGE_ALT_INDEX: w->alt_index = (int32_t)f.value; break;
            case VARIANT_MESSAGE_HAS_QUALITY: w->has_quality = f.value != 0; break;
            }
        } else if (f.wire == WIRE_FIXED64 && f.number == VARIANT_MESSAGE_QUALITY) {
            memcpy(&w->quality, &f.value, 8);
        }
    }
    return more < 0 ? walk_failed(c, &f) : more;
}

static int read_annotation(Collector *c, Result *r, const uint8_t *p, const uint8_t *end) {
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.wire != WIRE_LEN)
            continue;
        if (f.number == LOCAL_ANNOTATION_VARIANT_CLASS)
            r->variant_class = view_of(&f);
        else if (f.number == LOCAL_ANNOTATION_GENE)
            r->gene = view_of(&f);
    }
    return more < 0 ? walk_failed(c, &f) : more;
}

static int read_result(Collector *c, const uint8_t *p, const uint8_t *end) {
    Result r;
    memset(&r, 0, sizeof r);
    r.whole.p = (const char *)p;
    r.whole.n = end - p;
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.wire == WIRE_LEN) {
            switch (f.number) {
            case ANALYSIS_RESULT_PROVIDER: r.provider = view_of(&f); break;
            case ANALYSIS_RESULT_MODEL: r.model = view_of(&f); break;
            case ANALYSIS_RESULT_CLASSIFICATION: r.classification = view_of(&f); break;
            case ANALYSIS_RESULT_ERROR: r.error = view_of(&f); break;
            case ANALYSIS_RESULT_ANNOTATION:
                if (read_annotation(c, &r, f.data, f.data + f.len))
                    return -1;
                break;
            case ANALYSIS_RESULT_COMPLETED_AT:
                if (read_timestamp(c, f.data, f.data + f.len, &r.done_seconds, &r.done_nanos))
                    return -1;
                break;
            }
        } else if (f.wire == WIRE_VARINT && f.number == ANALYSIS_RESULT_STATUS) {
            r.status = (int32_t)f.value;
        } else if (f.wire == WIRE_FIXED64 && f.number == ANALYSIS_RESULT_CONFIDENCE) {
            memcpy(&r.confidence, &f.value, 8);
        }
    }
    if (more < 0)
        return walk_failed(c, &f);
    r.done = timestamp_us(r.done_seconds, r.done_nanos);
    return buf_put(&c->results, &r, sizeof r);
}

static int read_write(Collector *c, const uint8_t *p, const uint8_t *end) {
    Write w;
    memset(&w, 0, sizeof w);
    w.missing_start = VEC_LEN(c->missing, View);
    w.filters_start = VEC_LEN(c->filters, View);
    w.results_start = VEC_LEN(c->results, Result);
    w.calls_start = VEC_LEN(c->gt_samples, View);
    w.ploidy_start = VEC_LEN(c->gt_ploidy, int32_t);
    w.depth_start = VEC_LEN(c->gt_depth, int32_t);
    w.quality_start = VEC_LEN(c->gt_quality, int32_t);
    w.counts_start = VEC_LEN(c->gt_counts, int32_t);
    w.alleles_start = VEC_LEN(c->alleles, int32_t);
    w.depths_start = VEC_LEN(c->depths, int32_t);
    c->gt_phased.p = NULL;
    c->gt_phased.n = 0;
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.wire == WIRE_LEN) {
            switch (f.number) {
            case DATABASE_WRITE_CORRELATION_ID: w.cid = view_of(&f); break;
            case DATABASE_WRITE_JOB_ID: w.job = view_of(&f); break;
            case DATABASE_WRITE_TENANT_ID: w.tenant = view_of(&f); break;
            case DATABASE_WRITE_CLASSIFICATION: w.classification = view_of(&f); break;
            case DATABASE_WRITE_PRIORITY_TIER: w.tier = view_of(&f); break;
            case DATABASE_WRITE_VARIANT:
                if (read_variant(c, &w, f.data, f.data + f.len))
                    return -1;
                break;
            case DATABASE_WRITE_RESULTS:
                if (read_result(c, f.data, f.data + f.len))
                    return -1;
                break;
            case DATABASE_WRITE_MISSING_PROVIDERS: {
                View v = view_of(&f);
                if (buf_put(&c->missing, &v, sizeof v))
                    return -1;
                break;
            }
            }
        } else if (f.wire == WIRE_VARINT && f.number == DATABASE_WRITE_PARTIAL) {
            w.partial = f.value != 0;
        }
    }
    if (more < 0)
        return walk_failed(c, &f);
    if (check_genotype_columns(c, &w))
        return -1;
    w.stamped = timestamp_us(w.ts_seconds, w.ts_nanos);
    w.missing_count = VEC_LEN(c->missing, View) - w.missing_start;
    w.filters_count = VEC_LEN(c->filters, View) - w.filters_start;
    w.results_count = VEC_LEN(c->results, Result) - w.results_start;
    /* Arrow's timestamp column cannot hold it: the one value a write is refused for, before it is kept.
     * (A later duplicate of the write might have replaced it; the payload is refused regardless.) */
    if (write_updated(&c->results, &w).overflow) {
        c->error = "updated_at (the latest timestamp of a write) is out of the int64 microsecond range";
        return -1;
    }
    return buf_put(&c->writes, &w, sizeof w);
}

/* ---- take(): the columns ---- */

/* An Arrow string (or binary) column: int32 offsets and the bytes. */
typedef struct {
    Buf offsets, data;
} Text;

typedef struct {
    /* variants */
    Text cid, job, tenant, file_id, source_name, chrom, ref, alt, variant_id;
    Text classification, tier, gene, variant_class, filters, missing, carriers;
    Buf record_index, position, alt_index, quality, quality_valid, partial, updated;
    Buf filters_offsets, missing_offsets, calls_offsets, carriers_offsets;
    /* calls */
    Text sample, genotype;
    Buf depth, genotype_quality, depths, depths_offsets, carrier;
    /* analyses */
    Text analysis_id, result_cid, result_job, result_tenant, provider, model, status;
    Text result_classification, error, detail, result_file;
    Buf confidence, result_record;
    Py_ssize_t variants, calls, analyses;
    int failed; /* 1: out of memory, 2: a column past 2 GiB */
} Columns;

static int put_offset(Columns *out, Buf *offsets, size_t value) {
    if (value > INT32_MAX) {
        out->failed = 2;
        return -1;
    }
    int32_t v = (int32_t)value;
    if (buf_put(offsets, &v, sizeof v)) {
        out->failed = 1;
        return -1;
    }
    return 0;
}

static int text_put(Columns *out, Text *t, const char *p, size_t n) {
    if (buf_put(&t->data, p, n)) {
        out->failed = 1;
        return -1;
    }
    return put_offset(out, &t->offsets, t->data.len);
}

static int text_put3(Columns *out, Text *t, View a, const char *sep, View b) {
    size_t sep_len = strlen(sep);
    if (buf_put(&t->data, a.p, a.n) || buf_put(&t->data, sep, sep_len) || buf_put(&t->data, b.p, b.n)) {
        out->failed = 1;
        return -1;
    }
    return put_offset(out, &t->offsets, t->data.len);
}

#define TEXT(t, v) text_put(out, (t), (v).p, (size_t)(v).n)

static int fixed_put(Columns *out, Buf *b, const void *v, size_t n) {
    if (buf_put(b, v, n)) {
        out->failed = 1;
        return -1;
    }
    return 0;
}

static int bit_put(Columns *out, Buf *bits, Py_ssize_t index, int set) {
    if (index % 8 == 0) {
        uint8_t zero = 0;
        if (fixed_put(out, bits, &zero, 1))
            return -1;
    }
    if (set)
        bits->p[index / 8] |= (char)(1 << (index % 8));
    return 0;
}

static int genotype_text(Columns *out, const Collector *c, const Call *call) {
    if (call->alleles_count == 0)
        return text_put(out, &out->genotype, ".", 1);
    char digits[16];
    const int32_t *alleles = &VEC_AT(c->alleles, int32_t, call->alleles_start);
    for (Py_ssize_t i = 0; i < call->alleles_count; i++) {
        if (i && buf_put(&out->genotype.data, call->phased ? "|" : "/", 1))
            goto oom;
        if (alleles[i] < 0) {
            if (buf_put(&out->genotype.data, ".", 1))
                goto oom;
        } else {
            /* Decimal digits, written backwards: snprintf's cost per allele showed in profiles. */
            uint32_t v = (uint32_t)alleles[i];
            char *end = digits + sizeof digits, *d = end;
            do {
                *--d = (char)('0' + v % 10);
                v /= 10;
            } while (v);
            if (buf_put(&out->genotype.data, d, (size_t)(end - d)))
                goto oom;
        }
    }
    return put_offset(out, &out->genotype.offsets, out->genotype.data.len);
oom:
    out->failed = 1;
    return -1;
}

static int emit_call(Columns *out, const Collector *c, const Write *w, const Call *call) {
    /* A carrier holds this ALT allele (alt_index + 1) in its genotype (VCFv4.1 section 1.4.2). */
    int carrier = 0;
    const int32_t *alleles = &VEC_AT(c->alleles, int32_t, call->alleles_start);
    for (Py_ssize_t i = 0; i < call->alleles_count && !carrier; i++)
        carrier = (int64_t)alleles[i] == (int64_t)w->alt_index + 1;
    /* A call's variant and tenant are its list parent's, so they are not copied per call. */
    if (TEXT(&out->sample, call->sample) || genotype_text(out, c, call) || fixed_put(out, &out->depth, &call->depth, 4) ||
        fixed_put(out, &out->genotype_quality, &call->quality, 4) ||
        fixed_put(out, &out->depths, &VEC_AT(c->depths, int32_t, call->depths_start),
                  (size_t)call->depths_count * 4) ||
        put_offset(out, &out->depths_offsets, out->depths.len / 4) ||
        bit_put(out, &out->carrier, out->calls, carrier))
        return -1;
    out->calls++;
    return carrier ? TEXT(&out->carriers, call->sample) : 0;
}

/* The result's bytes without its echoed variant (field 16), as the analyses table stores them. */
static int detail_put(Columns *out, const Result *r) {
    const uint8_t *p = (const uint8_t *)r->whole.p, *end = p + r->whole.n;
    Field f;
    while (next_field(&p, end, &f) == 1) {
        if (f.number == ANALYSIS_RESULT_VARIANT && f.wire == WIRE_LEN)
            continue;
        if (buf_put(&out->detail.data, f.start, (size_t)(p - f.start))) {
            out->failed = 1;
            return -1;
        }
    }
    return put_offset(out, &out->detail.offsets, out->detail.data.len);
}

static int emit_result(Columns *out, const Write *w, const Result *r, const char *status, size_t status_len) {
    /* analysis_id is correlation_id + ':' + provider: one provider's answer for one variant, the
     * key of both stores. */
    if (text_put3(out, &out->analysis_id, w->cid, ":", r->provider) || TEXT(&out->result_cid, w->cid) ||
        TEXT(&out->result_job, w->job) || TEXT(&out->result_tenant, w->tenant) ||
        TEXT(&out->provider, r->provider) || TEXT(&out->model, r->model) ||
        text_put(out, &out->status, status, status_len) || TEXT(&out->result_classification, r->classification) ||
        fixed_put(out, &out->confidence, &r->confidence, 8) || TEXT(&out->error, r->error) ||
        detail_put(out, r) || TEXT(&out->result_file, w->file_id) ||
        fixed_put(out, &out->result_record, &w->record_index, 8))
        return -1;
    out->analyses++;
    return 0;
}

static int emit_write(Columns *out, const Collector *c, const Write *w, const Name *statuses,
                      Py_ssize_t status_count, Name unknown) {
    const Result *results = &VEC_AT(c->results, Result, w->results_start);
    View gene = {"", 0}, variant_class = {"", 0};
    for (Py_ssize_t i = 0; i < w->results_count; i++) {
        const Result *r = kept_result(results, w->results_count, i);
        if (r == NULL)
            continue;
        if (gene.n == 0)
            gene = r->gene;
        if (variant_class.n == 0)
            variant_class = r->variant_class;
        Name status = (r->status >= 0 && r->status < status_count) ? statuses[r->status] : unknown;
        if (emit_result(out, w, r, status.text, (size_t)status.len))
            return -1;
    }

    Py_ssize_t row = out->variants;
    if (TEXT(&out->cid, w->cid) || TEXT(&out->job, w->job) || TEXT(&out->tenant, w->tenant) ||
        TEXT(&out->file_id, w->file_id) || TEXT(&out->source_name, w->source_name) ||
        fixed_put(out, &out->record_index, &w->record_index, 8) || TEXT(&out->chrom, w->chrom) ||
        fixed_put(out, &out->position, &w->position, 8) || TEXT(&out->ref, w->ref) || TEXT(&out->alt, w->alt) ||
        fixed_put(out, &out->alt_index, &w->alt_index, 4) || TEXT(&out->variant_id, w->variant_id))
        return -1;
    double quality = w->has_quality ? w->quality : 0.0;
    if (fixed_put(out, &out->quality, &quality, 8) || bit_put(out, &out->quality_valid, row, w->has_quality))
        return -1;
    for (Py_ssize_t i = 0; i < w->filters_count; i++)
        if (TEXT(&out->filters, VEC_AT(c->filters, View, w->filters_start + i)))
            return -1;
    if (put_offset(out, &out->filters_offsets, (size_t)VEC_LEN(out->filters.offsets, int32_t) - 1) ||
        TEXT(&out->classification, w->classification) || TEXT(&out->tier, w->tier) || TEXT(&out->gene, gene) ||
        TEXT(&out->variant_class, variant_class) || bit_put(out, &out->partial, row, w->partial))
        return -1;
    for (Py_ssize_t i = 0; i < w->missing_count; i++)
        if (TEXT(&out->missing, VEC_AT(c->missing, View, w->missing_start + i)))
            return -1;
    if (put_offset(out, &out->missing_offsets, (size_t)VEC_LEN(out->missing.offsets, int32_t) - 1))
        return -1;
    Py_ssize_t at = w->alleles_start, ad_at = w->depths_start;
    for (Py_ssize_t i = 0; i < w->calls_count; i++) {
        Call call;
        call.sample = VEC_AT(c->gt_samples, View, w->calls_start + i);
        call.alleles_start = at;
        call.alleles_count =
            w->ploidy_start < 0 ? 0 : (Py_ssize_t)(uint32_t)VEC_AT(c->gt_ploidy, int32_t, w->ploidy_start + i);
        call.phased = w->phased.n && (((const uint8_t *)w->phased.p)[i >> 3] >> (i & 7) & 1);
        call.depth = w->depth_start < 0 ? -1 : VEC_AT(c->gt_depth, int32_t, w->depth_start + i);
        call.quality = w->quality_start < 0 ? -1 : VEC_AT(c->gt_quality, int32_t, w->quality_start + i);
        call.depths_start = ad_at;
        call.depths_count =
            w->counts_start < 0 ? 0 : (Py_ssize_t)(uint32_t)VEC_AT(c->gt_counts, int32_t, w->counts_start + i);
        at += call.alleles_count;
        ad_at += call.depths_count;
        if (emit_call(out, c, w, &call))
            return -1;
    }
    Micros updated = write_updated(&c->results, w);
    if (put_offset(out, &out->calls_offsets, (size_t)out->calls) ||
        put_offset(out, &out->carriers_offsets, (size_t)VEC_LEN(out->carriers.offsets, int32_t) - 1) ||
        fixed_put(out, &out->updated, &updated.us, 8))
        return -1;
    out->variants++;
    return 0;
}

static uint64_t view_hash(View v) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < v.n; i++) {
        h ^= (uint8_t)v.p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Every write once per correlation id: the last one, where the first one stood. */
static int emit_all(Columns *out, const Collector *c, const Name *statuses, Py_ssize_t status_count,
                    Name unknown) {
    Py_ssize_t n = VEC_LEN(c->writes, Write);
    size_t slots = 16;
    while (slots < (size_t)n * 2)
        slots *= 2;
    /* Per slot: index + 1 of the first write with that id (0 = empty); per write: its last twin. */
    Py_ssize_t *table = calloc(slots, sizeof *table);
    Py_ssize_t *last = malloc(((size_t)n + 1) * sizeof *last);
    int rc = -1;
    if (table == NULL || last == NULL) {
        out->failed = 1;
        goto done;
    }
    const Write *writes = (const Write *)c->writes.p;
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t slot = (size_t)view_hash(writes[i].cid) & (slots - 1);
        while (table[slot] && !view_eq(writes[table[slot] - 1].cid, writes[i].cid))
            slot = (slot + 1) & (slots - 1);
        if (table[slot] == 0) {
            table[slot] = i + 1;
            last[i] = i;
        } else {
            last[table[slot] - 1] = i;
            last[i] = -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (last[i] >= 0 && emit_write(out, c, &writes[last[i]], statuses, status_count, unknown))
            goto done;
    rc = 0;
done:
    free(table);
    free(last);
    return rc;
}

/* ---- the Python type ---- */

static void collector_clear(Collector *c) {
    buf_free(&c->writes);
    buf_free(&c->results);
    buf_free(&c->missing);
    buf_free(&c->filters);
    buf_free(&c->alleles);
    buf_free(&c->depths);
    buf_free(&c->gt_samples);
    buf_free(&c->gt_ploidy);
    buf_free(&c->gt_depth);
    buf_free(&c->gt_quality);
    buf_free(&c->gt_counts);
}

/* The schema: a tuple of (full name, fields), a field being (number, WIRE_CHECK kind, repeated,
 * child message index or -1); NULL with an exception set when it is not one. */
static MessageSpec *read_schema(PyObject *messages, Py_ssize_t *count_out) {
    Py_ssize_t count = PyTuple_GET_SIZE(messages);
    if (count == 0) {
        PyErr_SetString(PyExc_ValueError, "the schema has no message");
        return NULL;
    }
    MessageSpec *specs = PyMem_Calloc((size_t)count, sizeof *specs);
    if (specs == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t m = 0; m < count; m++) {
        const char *name;
        PyObject *fields;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(messages, m), "sO!", &name, &PyTuple_Type, &fields))
            goto fail;
        specs[m].name = PyMem_Malloc(strlen(name) + 1);
        if (specs[m].name == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        strcpy(specs[m].name, name);
        specs[m].count = PyTuple_GET_SIZE(fields);
        specs[m].fields = PyMem_Calloc((size_t)specs[m].count + 1, sizeof(FieldSpec));
        if (specs[m].fields == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (Py_ssize_t i = 0; i < specs[m].count; i++) {
            FieldSpec *spec = &specs[m].fields[i];
            unsigned int number;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(fields, i), "Iipi", &number, &spec->kind, &spec->repeated,
                                  &spec->child))
                goto fail;
            spec->number = number;
            if (spec->kind == WIRE_CHECK_MESSAGE && (spec->child < 0 || spec->child >= count)) {
                PyErr_SetString(PyExc_ValueError, "message field refers to an unknown message");
                goto fail;
            }
        }
    }
    *count_out = count;
    return specs;
fail:
    free_messages(specs, count);
    return NULL;
}

/* A copy of a str's UTF-8, owned by the collector; 0 or -1 with an exception set. */
static int copy_name(Name *name, PyObject *text) {
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (utf8 == NULL)
        return -1;
    char *copy = PyMem_Malloc((size_t)len + 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, utf8, (size_t)len + 1);
    name->text = copy;
    name->len = len;
    return 0;
}

static void free_names(Collector *c) {
    for (Py_ssize_t i = 0; c->statuses != NULL && i < c->status_count; i++)
        PyMem_Free((void *)c->statuses[i].text);
    PyMem_Free(c->statuses);
    PyMem_Free((void *)c->unknown.text);
    c->statuses = NULL;
    c->status_count = 0;
    c->unknown.text = NULL;
    free_messages(c->messages, c->message_count);
    c->messages = NULL;
    c->message_count = 0;
}

static int collector_init(Collector *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"schema", "status_names", "unknown_status", NULL};
    PyObject *messages, *status_names, *unknown;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!U:Collector", keywords, &PyTuple_Type, &messages,
                                     &PyTuple_Type, &status_names, &unknown))
        return -1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "collector in use by take()");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(status_names); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(status_names, i))) {
            PyErr_SetString(PyExc_TypeError, "status names must be str");
            return -1;
        }
    collector_clear(self);
    free_names(self);
    self->messages = read_schema(messages, &self->message_count);
    if (self->messages == NULL)
        return -1;
    self->statuses = PyMem_Calloc((size_t)PyTuple_GET_SIZE(status_names) + 1, sizeof(Name));
    if (self->statuses == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(status_names); i++) {
        if (copy_name(&self->statuses[i], PyTuple_GET_ITEM(status_names, i)))
            return -1;
        self->status_count = i + 1;
    }
    if (copy_name(&self->unknown, unknown))
        return -1;
    Py_XSETREF(self->payloads, PyList_New(0));
    return self->payloads == NULL ? -1 : 0;
}

static void collector_dealloc(Collector *self) {
    collector_clear(self);
    free_names(self);
    Py_XDECREF(self->payloads);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t collector_len(Collector *self) {
    return VEC_LEN(self->writes, Write);
}

static PyObject *collector_add(Collector *self, PyObject *payload) {
    if (!PyBytes_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "payload must be bytes");
        return NULL;
    }
    if (self->messages == NULL || self->unknown.text == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the collector was not initialised");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "collector in use by take()");
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(payload);
    const uint8_t *end = p + PyBytes_GET_SIZE(payload);
    self->error = NULL;
    if (validate(self, p, end, 0, 0)) {
        PyErr_Format(PyExc_ValueError, "%s", self->error);
        return NULL;
    }
    PyObject *markers = PyList_New(0);
    if (markers == NULL)
        return NULL;
    Buf *arenas[] = {&self->writes,    &self->results,   &self->missing,  &self->filters,
                     &self->alleles,   &self->depths,    &self->gt_samples, &self->gt_ploidy,
                     &self->gt_depth,  &self->gt_quality, &self->gt_counts};
    enum { ARENAS = sizeof arenas / sizeof arenas[0] };
    size_t marks[ARENAS];
    for (size_t i = 0; i < ARENAS; i++)
        marks[i] = arenas[i]->len;
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.wire != WIRE_LEN)
            continue;
        if (f.number == 1) {
            if (read_write(self, f.data, f.data + f.len))
                goto refused;
        } else if (f.number == 2) {
            PyObject *marker = PyBytes_FromStringAndSize((const char *)f.data, (Py_ssize_t)f.len);
            if (marker == NULL || PyList_Append(markers, marker)) {
                Py_XDECREF(marker);
                goto fail;
            }
            Py_DECREF(marker);
        }
    }
    if (more < 0) {
        walk_failed(self, &f);
        goto refused;
    }
    if (PyList_Append(self->payloads, payload))
        goto fail;
    return markers;
refused:
    /* error is NULL only when memory ran out. */
    if (self->error == NULL)
        PyErr_NoMemory();
    else
        PyErr_Format(PyExc_ValueError, "%s", self->error);
fail:
    /* Nothing of a rejected payload stays. */
    for (size_t i = 0; i < ARENAS; i++)
        arenas[i]->len = marks[i];
    Py_DECREF(markers);
    return NULL;
}

/* Every output column once, by name as _rows.py reads it: starting, freeing and handing them
 * over all walk these tables, so a new column cannot be half wired. */
typedef struct {
    const char *name;
    size_t offset;
} Slot;

#define SLOT(name, field) {name, offsetof(Columns, field)}
static const Slot TEXT_SLOTS[] = {
    SLOT("correlation_id", cid),
    SLOT("job_id", job),
    SLOT("tenant_id", tenant),
    SLOT("file_id", file_id),
    SLOT("source_name", source_name),
    SLOT("chromosome", chrom),
    SLOT("reference", ref),
    SLOT("alternate", alt),
    SLOT("variant_id", variant_id),
    SLOT("classification", classification),
    SLOT("priority_tier", tier),
    SLOT("gene", gene),
    SLOT("variant_class", variant_class),
    SLOT("filters", filters),
    SLOT("missing_providers", missing),
    SLOT("carriers", carriers),
    SLOT("call.sample", sample),
    SLOT("call.genotype", genotype),
    SLOT("analysis.analysis_id", analysis_id),
    SLOT("analysis.correlation_id", result_cid),
    SLOT("analysis.job_id", result_job),
    SLOT("analysis.tenant_id", result_tenant),
    SLOT("analysis.provider", provider),
    SLOT("analysis.model", model),
    SLOT("analysis.status", status),
    SLOT("analysis.classification", result_classification),
    SLOT("analysis.error", error),
    SLOT("analysis.detail", detail),
    SLOT("analysis.file_id", result_file),
};

/* Fixed-width values and bitmaps. */
static const Slot VALUE_SLOTS[] = {
    SLOT("record_index", record_index),
    SLOT("position", position),
    SLOT("alt_index", alt_index),
    SLOT("quality", quality),
    SLOT("quality.valid", quality_valid),
    SLOT("partial", partial),
    SLOT("updated_at", updated),
    SLOT("call.depth", depth),
    SLOT("call.genotype_quality", genotype_quality),
    SLOT("call.allele_depths", depths),
    SLOT("call.carrier", carrier),
    SLOT("analysis.confidence", confidence),
    SLOT("analysis.record_index", result_record),
};

/* List offsets, which start at 0 like a text column's. */
static const Slot OFFSET_SLOTS[] = {
    SLOT("filters.offsets", filters_offsets),
    SLOT("missing_providers.offsets", missing_offsets),
    SLOT("genotypes.offsets", calls_offsets),
    SLOT("carriers.offsets", carriers_offsets),
    SLOT("call.allele_depths.offsets", depths_offsets),
};
#undef SLOT

#define SLOTS(table) (sizeof(table) / sizeof((table)[0]))
#define SLOT_AT(out, type, slot) ((type *)((char *)(out) + (slot).offset))

static void columns_free(Columns *out) {
    for (size_t i = 0; i < SLOTS(TEXT_SLOTS); i++) {
        buf_free(&SLOT_AT(out, Text, TEXT_SLOTS[i])->offsets);
        buf_free(&SLOT_AT(out, Text, TEXT_SLOTS[i])->data);
    }
    for (size_t i = 0; i < SLOTS(VALUE_SLOTS); i++)
        buf_free(SLOT_AT(out, Buf, VALUE_SLOTS[i]));
    for (size_t i = 0; i < SLOTS(OFFSET_SLOTS); i++)
        buf_free(SLOT_AT(out, Buf, OFFSET_SLOTS[i]));
}

static int columns_start(Columns *out) {
    for (size_t i = 0; i < SLOTS(TEXT_SLOTS); i++)
        if (put_offset(out, &SLOT_AT(out, Text, TEXT_SLOTS[i])->offsets, 0))
            return -1;
    for (size_t i = 0; i < SLOTS(OFFSET_SLOTS); i++)
        if (put_offset(out, SLOT_AT(out, Buf, OFFSET_SLOTS[i]), 0))
            return -1;
    return 0;
}

static PyObject *bytes_of(const Buf *b) {
    return PyBytes_FromStringAndSize(b->len ? b->p : "", (Py_ssize_t)b->len);
}

static int set_bytes(PyObject *dict, const char *name, const Buf *b) {
    PyObject *value = bytes_of(b);
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItemString(dict, name, value);
    Py_DECREF(value);
    return rc;
}

static int set_text(PyObject *dict, const char *name, const Text *t) {
    PyObject *offsets = bytes_of(&t->offsets), *data = bytes_of(&t->data);
    PyObject *pair = (offsets && data) ? PyTuple_Pack(2, offsets, data) : NULL;
    Py_XDECREF(offsets);
    Py_XDECREF(data);
    if (pair == NULL)
        return -1;
    int rc = PyDict_SetItemString(dict, name, pair);
    Py_DECREF(pair);
    return rc;
}

static PyObject *columns_dict(Columns *out) {
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < SLOTS(TEXT_SLOTS); i++)
        if (set_text(d, TEXT_SLOTS[i].name, SLOT_AT(out, Text, TEXT_SLOTS[i])))
            goto fail;
    for (size_t i = 0; i < SLOTS(VALUE_SLOTS); i++)
        if (set_bytes(d, VALUE_SLOTS[i].name, SLOT_AT(out, Buf, VALUE_SLOTS[i])))
            goto fail;
    for (size_t i = 0; i < SLOTS(OFFSET_SLOTS); i++)
        if (set_bytes(d, OFFSET_SLOTS[i].name, SLOT_AT(out, Buf, OFFSET_SLOTS[i])))
            goto fail;
    PyObject *counts = Py_BuildValue("(nnn)", out->variants, out->calls, out->analyses);
    if (counts == NULL || PyDict_SetItemString(d, "rows", counts)) {
        Py_XDECREF(counts);
        goto fail;
    }
    Py_DECREF(counts);
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *collector_take(Collector *self, PyObject *unused) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "collector in use by take()");
        return NULL;
    }
    if (self->messages == NULL || self->unknown.text == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the collector was not initialised");
        return NULL;
    }

    Columns out;
    memset(&out, 0, sizeof out);
    int rc;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    /* Only the collector's own memory and the payloads it holds are read without the GIL. */
    rc = columns_start(&out) || emit_all(&out, self, self->statuses, self->status_count, self->unknown);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyObject *result = NULL;
    if (rc) {
        if (out.failed == 2)
            PyErr_SetString(PyExc_OverflowError, "a column of this batch exceeds 2 GiB");
        else
            PyErr_NoMemory();
    } else {
        result = columns_dict(&out);
    }
    columns_free(&out);
    if (result != NULL) {
        collector_clear(self);
        Py_SETREF(self->payloads, PyList_New(0));
        if (self->payloads == NULL)
            Py_CLEAR(result);
    }
    return result;
}

static PyMethodDef collector_methods[] = {
    {"add", (PyCFunction)collector_add, METH_O,
     "Check and index one serialized DatabaseWriteBatch; returns its serialized JobMarkers."},
    {"take", (PyCFunction)collector_take, METH_NOARGS,
     "Column buffers of everything collected; the collector is then empty."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods collector_sequence = {.sq_length = (lenfunc)collector_len};

static PyTypeObject CollectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vcf_agent.services.writer._row_builder.Collector",
    .tp_basicsize = sizeof(Collector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Collector(schema, status_names, unknown_status): DatabaseWriteBatch payloads collected for "
              "one store batch.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)collector_init,
    .tp_dealloc = (destructor)collector_dealloc,
    .tp_methods = collector_methods,
    .tp_as_sequence = &collector_sequence,
};

static PyMethodDef module_methods[] = {{NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_row_builder", "Arrow column buffers from DatabaseWriteBatch wire bytes.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__row_builder(void) {
    if (PyType_Ready(&CollectorType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&CollectorType);
    if (PyModule_AddObject(module, "Collector", (PyObject *)&CollectorType) < 0) {
        Py_DECREF(&CollectorType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
