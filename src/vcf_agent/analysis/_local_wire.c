/*
 * The local provider's wire format: what the annotator reads of a serialized
 * VariantBatch, as plain Python values (read_variants), and its answer, a
 * serialized AnalysisResult, written from plain values (encode_answer).
 *
 * Why C: reading a variant through upb's Python wrappers cost about 6 us, as
 * every attribute, map value and repeated field is a Python object of its own;
 * reading the wire bytes once costs a fraction of that. Setting the answer's
 * fields through upb and serializing them cost about as much again, and
 * writing the fields in Python a third of the annotator's time.
 *
 * Contract with its caller (_providers): read_variants(batch) returns what upb would
 * report, or None whenever the payload is anything but the plain case; the
 * caller then reads the batch through protobuf (variant_fields), so protobuf's
 * rules for the rare shapes live in one place. The plain case is well-formed
 * wire data as upb checks it (every length, varint and wire type, UTF-8 in
 * every string field, even those not returned), known fields with their
 * declared wire types, no groups, at most one value per InfoValue and per map
 * entry (a second one would be merged or replace the first), and no unknown
 * fields in a map entry. So a payload upb rejects is never read here.
 *
 * Repeated values come as tuples: INFO values are the strings, ints or floats
 * of the list the InfoValue holds, () for a flag or an empty value. A variant's
 * calls come as GenotypeCalls, equal to the tuple of them and made of it only
 * when used; sample_findings and encoded_findings read them from the wire.
 *
 * encode_answer writes the fields in field-number order and leaves out proto3
 * defaults, as upb's serializer does, so the bytes are the same
 * (tests/router/test_variant_reader.py compares them with upb's).
 *
 * The worker sends its answers with each variant's bytes spliced in first, as they arrived (the
 * format of schema/_variant_first.py; variant_batch_parts, splice_results), and split_results
 * splits them back for the aggregator, which parses the answers alone. Their pure-Python twins
 * (analysis/_spliced_results.py) cost about 0.5 to 1.5 us per variant each, more than protobuf
 * parsing the answers; these a few tenths.
 *
 * Field numbers come from the generated wire_numbers.h (scripts/generate_proto.py), never by
 * hand. The extension is optional: without it the provider reads and answers through protobuf
 * (analysis/_variant_fields.py and _local_annotator.py hold that twin).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_wire.h"
#include "wire_numbers.h"

/* ---- the wire format: read as upb does (schema/_wire.h), values as Python objects ---- */

/* A string field's value; NULL without an exception set when it is not UTF-8 (strict, as upb's check). */
static PyObject *text(const Field *f) {
    if (f->wire != WIRE_LEN)
        return NULL;
    PyObject *value = PyUnicode_DecodeUTF8((const char *)f->data, (Py_ssize_t)f->len, NULL);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear();
    return value;
}

/* Replaces *slot with a string field's value: upb checks every occurrence, keeps the last. */
static int set_text(PyObject **slot, const Field *f) {
    PyObject *value = text(f);
    if (value == NULL)
        return -1;
    Py_XSETREF(*slot, value);
    return 0;
}

/* Appends `item`, a new reference or NULL on a failure before. */
static int append(PyObject *list, PyObject *item) {
    if (item == NULL)
        return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

/*
 * The list as a tuple. Its items are strings, numbers or such tuples, so it cannot be in a reference
 * cycle: it is untracked as the garbage collector would untrack it, which spares the collector
 * visiting a dozen containers per variant (it otherwise took a third of the reader's time).
 */
static PyObject *frozen(PyObject *list) {
    if (list == NULL)
        return NULL;
    PyObject *tuple = PyList_AsTuple(list);
    Py_DECREF(list);
    if (tuple != NULL)
        PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* ---- repeated numbers, packed or not ---- */

typedef PyObject *(*Convert)(uint64_t);

static PyObject *int64_value(uint64_t value) { return PyLong_FromLongLong((int64_t)value); }

static PyObject *double_value(uint64_t value) {
    double number;
    memcpy(&number, &value, 8);
    return PyFloat_FromDouble(number);
}

/* Appends one occurrence of a repeated varint or double (`wire`) field: one value, or packed ones. */
static int append_numbers(PyObject *list, const Field *f, int wire, Convert convert) {
    if (f->wire == wire)
        return append(list, convert(f->value));
    if (f->wire != WIRE_LEN || (wire == WIRE_FIXED64 && f->len % 8))
        return -1;
    const uint8_t *p = f->data, *end = f->data + f->len;
    uint64_t value;
    while (p < end) {
        if (wire == WIRE_FIXED64) {
            memcpy(&value, p, 8);
            p += 8;
        } else if (read_varint(&p, end, 10, &value)) {
            return -1;
        }
        if (append(list, convert(value)))
            return -1;
    }
    return 0;
}

/* ---- INFO: map<string, InfoValue> ---- */

/* Appends the values of an IntList, FloatList or StringList, by InfoValue's field `kind`. */
static int list_values(PyObject *values, uint32_t kind, const uint8_t *p, const uint8_t *end) {
    uint32_t number = kind == INFO_VALUE_STRINGS ? STRING_LIST_VALUES
                      : kind == INFO_VALUE_INTS  ? INT_LIST_VALUES
                                                 : FLOAT_LIST_VALUES;
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.number != number)
            continue;
        int failed = kind == INFO_VALUE_STRINGS ? append(values, text(&f))
                     : kind == INFO_VALUE_INTS  ? append_numbers(values, &f, WIRE_VARINT, int64_value)
                                                : append_numbers(values, &f, WIRE_FIXED64, double_value);
        if (failed)
            return -1;
    }
    return more;
}

/* One InfoValue's values; () for a flag or nothing set. */
static PyObject *info_value(const uint8_t *p, const uint8_t *end) {
    PyObject *values = PyList_New(0);
    Field f;
    int more = -1, seen = 0;
    while (values != NULL && (more = next_field(&p, end, &f)) == 1) {
        int flag = f.number == INFO_VALUE_FLAG;
        if (!flag && f.number != INFO_VALUE_INTS && f.number != INFO_VALUE_FLOATS && f.number != INFO_VALUE_STRINGS)
            continue;
        if (seen++ || f.wire != (flag ? WIRE_VARINT : WIRE_LEN) ||
            (!flag && list_values(values, f.number, f.data, f.data + f.len) < 0))
            Py_CLEAR(values);
    }
    if (values != NULL && more < 0)
        Py_CLEAR(values);
    return frozen(values);
}

/* One map entry into `info`; a missing key is "", a missing value an empty InfoValue. */
static int info_entry(PyObject *info, const uint8_t *p, const uint8_t *end) {
    PyObject *key = NULL, *values = NULL;
    Field f;
    int more = -1, failed = 0;
    while (!failed && (more = next_field(&p, end, &f)) == 1) {
        if (f.number == VARIANT_MESSAGE_INFO_ENTRY_KEY)
            failed = set_text(&key, &f);
        else if (f.number == VARIANT_MESSAGE_INFO_ENTRY_VALUE)
            failed = values != NULL || f.wire != WIRE_LEN || (values = info_value(f.data, f.data + f.len)) == NULL;
        else
            failed = 1; /* upb keeps an entry with unknown fields out of the map, among the unknown fields */
    }
    if (!failed && more == 0) {
        if (key == NULL)
            key = PyUnicode_FromStringAndSize("", 0);
        if (values == NULL)
            values = PyTuple_New(0);
        failed = key == NULL || values == NULL || PyDict_SetItem(info, key, values) < 0;
    }
    Py_XDECREF(key);
    Py_XDECREF(values);
    return !failed && more == 0 ? 0 : -1;
}

/* ---- GenotypeColumns ---- */

enum { C_PLOIDY, C_ALLELES, C_PHASED, C_DEPTH, C_QUALITY, C_AD_COUNTS, C_ALLELE_DEPTHS, C_COUNT };

/* Which column a GenotypeColumns field is, other than samples; -1 for an unknown field. */
static int column_of(uint32_t number) {
    switch (number) {
    case GENOTYPE_COLUMNS_PLOIDY:
        return C_PLOIDY;
    case GENOTYPE_COLUMNS_ALLELES:
        return C_ALLELES;
    case GENOTYPE_COLUMNS_PHASED:
        return C_PHASED;
    case GENOTYPE_COLUMNS_DEPTH:
        return C_DEPTH;
    case GENOTYPE_COLUMNS_GENOTYPE_QUALITY:
        return C_QUALITY;
    case GENOTYPE_COLUMNS_ALLELE_DEPTH_COUNTS:
        return C_AD_COUNTS;
    case GENOTYPE_COLUMNS_ALLELE_DEPTHS:
        return C_ALLELE_DEPTHS;
    default:
        return -1;
    }
}

/* The varints of a packed field, each checked as upb reads it: their count, or -1 when malformed.
 * With `sum`, also the total of their uint32 values. */
static Py_ssize_t packed_count(const Field *f, uint64_t *sum) {
    const uint8_t *p = f->data, *end = f->data + f->len;
    Py_ssize_t count = 0;
    uint64_t value;
    while (p < end) {
        if (read_varint(&p, end, 10, &value))
            return -1;
        if (sum != NULL)
            *sum += (uint32_t)value;
        count++;
    }
    return count;
}

/* The next varint of a packed field already checked by packed_count. */
static uint64_t next_packed(const uint8_t **p, const uint8_t *end) {
    uint64_t value = 0;
    read_varint(p, end, 10, &value);
    return value;
}

static int32_t unzigzag(uint64_t value) {
    uint32_t bits = (uint32_t)value;
    return (int32_t)((bits >> 1) ^ (0u - (bits & 1)));
}

/* `count` sint32 values of a packed field as a tuple. */
static PyObject *sint32_tuple(const uint8_t **p, const uint8_t *end, Py_ssize_t count) {
    PyObject *values = PyTuple_New(count);
    if (values == NULL)
        return NULL;
    PyObject_GC_UnTrack(values); /* numbers only */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyLong_FromLong(unzigzag(next_packed(p, end)));
        if (value == NULL) {
            Py_DECREF(values);
            return NULL;
        }
        PyTuple_SET_ITEM(values, i, value);
    }
    return values;
}

/* The next value of a column, by its cursor; `absent` when the column is empty. */
static uint64_t next_in(const Field *columns, const uint8_t **cursor, int column, uint64_t absent) {
    const Field *f = &columns[column];
    return f->len ? next_packed(&cursor[column], f->data + f->len) : absent;
}

/* (sample, alleles, depth, genotype_quality, allele_depths) of the next sample, by the cursors over the columns. */
static PyObject *column_call(const Field *sample, const Field *columns, const uint8_t **cursor) {
    const uint8_t *alleles_end = columns[C_ALLELES].data + columns[C_ALLELES].len;
    const uint8_t *depths_end = columns[C_ALLELE_DEPTHS].data + columns[C_ALLELE_DEPTHS].len;
    PyObject *items[5] = {NULL};
    items[0] = text(sample);
    Py_ssize_t ploidy = (uint32_t)next_in(columns, cursor, C_PLOIDY, 0);
    items[1] = sint32_tuple(&cursor[C_ALLELES], alleles_end, ploidy);
    items[2] = PyLong_FromLong(unzigzag(next_in(columns, cursor, C_DEPTH, 1)));
    items[3] = PyLong_FromLong(unzigzag(next_in(columns, cursor, C_QUALITY, 1)));
    Py_ssize_t count = (uint32_t)next_in(columns, cursor, C_AD_COUNTS, 0);
    items[4] = sint32_tuple(&cursor[C_ALLELE_DEPTHS], depths_end, count);
    PyObject *call = NULL;
    if (items[0] && items[1] && items[2] && items[3] && items[4])
        call = PyTuple_New(5);
    if (call != NULL) {
        PyObject_GC_UnTrack(call); /* holds only strings, numbers and frozen tuples */
        for (int i = 0; i < 5; i++)
            PyTuple_SET_ITEM(call, i, items[i]);
    } else {
        for (int i = 0; i < 5; i++)
            Py_XDECREF(items[i]);
    }
    return call;
}

/*
 * The columns of a GenotypeColumns message and its number of samples; -1 unless it is the plain
 * case: each column at most once and packed, with one entry per sample or none (phased: the
 * bitmap's size or none), and the concatenated columns as long as the counts say; anything else
 * is left to protobuf and vcf_agent.schema.genotype_calls, which rejects what is inconsistent.
 */
static int checked_columns(const uint8_t *p, const uint8_t *end, Field *columns, Py_ssize_t *samples) {
    int seen[C_COUNT] = {0};
    memset(columns, 0, sizeof(Field) * C_COUNT);
    Field f;
    int more;
    *samples = 0;
    while ((more = next_field(&p, end, &f)) == 1) {
        if (f.number == GENOTYPE_COLUMNS_SAMPLES) {
            if (f.wire != WIRE_LEN || !utf8_valid(f.data, f.len))
                return -1;
            (*samples)++;
            continue;
        }
        int column = column_of(f.number);
        if (column < 0)
            continue;
        if (seen[column]++ || f.wire != WIRE_LEN)
            return -1;
        columns[column] = f;
    }
    if (more < 0)
        return -1;
    uint64_t alleles = 0, allele_depths = 0;
    Py_ssize_t counts[C_COUNT];
    for (int column = 0; column < C_COUNT; column++) {
        if (column == C_PHASED)
            continue;
        uint64_t *sum = column == C_PLOIDY ? &alleles : column == C_AD_COUNTS ? &allele_depths : NULL;
        counts[column] = packed_count(&columns[column], sum);
        if (counts[column] < 0)
            return -1;
        if (column != C_ALLELES && column != C_ALLELE_DEPTHS && counts[column] && counts[column] != *samples)
            return -1;
    }
    if ((uint64_t)counts[C_ALLELES] != alleles || (uint64_t)counts[C_ALLELE_DEPTHS] != allele_depths)
        return -1;
    if (columns[C_PHASED].len && columns[C_PHASED].len != (size_t)(*samples + 7) / 8)
        return -1;
    return 0;
}

/* Each sample's call of checked columns as a tuple of (sample, alleles, depth, genotype_quality,
 * allele_depths); NULL with an exception set. */
static PyObject *call_tuples(const uint8_t *p, const uint8_t *end, const Field *columns, Py_ssize_t samples) {
    PyObject *calls = PyTuple_New(samples);
    if (calls == NULL)
        return NULL;
    PyObject_GC_UnTrack(calls);
    const uint8_t *cursor[C_COUNT];
    for (int column = 0; column < C_COUNT; column++)
        cursor[column] = columns[column].data;
    Field f = {0};
    for (Py_ssize_t index = 0; index < samples; index++) {
        do {
            next_field(&p, end, &f);
        } while (f.number != GENOTYPE_COLUMNS_SAMPLES);
        PyObject *call = column_call(&f, columns, cursor);
        if (call == NULL) {
            Py_DECREF(calls);
            return NULL;
        }
        PyTuple_SET_ITEM(calls, index, call);
    }
    return calls;
}

/*
 * ---- GenotypeCalls: a variant's calls, turned into Python values only when used ----
 *
 * The annotator only needs the calls that are not hom-ref, and sample_findings reads those
 * from the columns directly. Built eagerly, the tuples of a 500-sample cohort batch cost the
 * router 145 us per variant, more than everything else it does; kept as the message's bytes
 * (a copy, so the payload's buffer may go), they cost a copy. As a sequence the object is the
 * tuple of calls read_variants used to return: built at its first use, compared, hashed and
 * printed as that tuple.
 */
typedef struct {
    PyObject_HEAD
    PyObject *wire; /* bytes: the GenotypeColumns message, as checked_columns accepted it */
    Field columns[C_COUNT]; /* into `wire` */
    Py_ssize_t samples;
    PyObject *calls; /* the tuple, once built */
} GenotypeCalls;

static PyTypeObject GenotypeCallsType;

/* The calls as a tuple, built once (a borrowed reference); NULL with an exception set. */
static PyObject *calls_tuple(GenotypeCalls *self) {
    if (self->calls == NULL) {
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(self->wire);
        self->calls = call_tuples(p, p + PyBytes_GET_SIZE(self->wire), self->columns, self->samples);
    }
    return self->calls;
}

static void calls_dealloc(GenotypeCalls *self) {
    Py_XDECREF(self->wire);
    Py_XDECREF(self->calls);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t calls_length(GenotypeCalls *self) { return self->samples; }

static PyObject *calls_item(GenotypeCalls *self, Py_ssize_t index) {
    PyObject *calls = calls_tuple(self);
    if (calls == NULL)
        return NULL;
    if (index < 0 || index >= self->samples) {
        PyErr_SetString(PyExc_IndexError, "genotype index out of range");
        return NULL;
    }
    return Py_NewRef(PyTuple_GET_ITEM(calls, index));
}

static PyObject *calls_subscript(GenotypeCalls *self, PyObject *key) {
    PyObject *calls = calls_tuple(self);
    return calls == NULL ? NULL : PyObject_GetItem(calls, key);
}

static PyObject *calls_iter(GenotypeCalls *self) {
    PyObject *calls = calls_tuple(self);
    return calls == NULL ? NULL : PyObject_GetIter(calls);
}

static PyObject *calls_repr(GenotypeCalls *self) {
    PyObject *calls = calls_tuple(self);
    return calls == NULL ? NULL : PyObject_Repr(calls);
}

static Py_hash_t calls_hash(GenotypeCalls *self) {
    PyObject *calls = calls_tuple(self);
    return calls == NULL ? -1 : PyObject_Hash(calls);
}

static PyObject *calls_richcompare(PyObject *self, PyObject *other, int op) {
    if (!Py_IS_TYPE(self, &GenotypeCallsType))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *mine = calls_tuple((GenotypeCalls *)self);
    PyObject *theirs = Py_IS_TYPE(other, &GenotypeCallsType) ? calls_tuple((GenotypeCalls *)other) : other;
    if (mine == NULL || theirs == NULL)
        return NULL;
    return PyObject_RichCompare(mine, theirs, op);
}

static PySequenceMethods calls_as_sequence = {
    .sq_length = (lenfunc)calls_length,
    .sq_item = (ssizeargfunc)calls_item,
};

static PyMappingMethods calls_as_mapping = {
    .mp_length = (lenfunc)calls_length,
    .mp_subscript = (binaryfunc)calls_subscript,
};

static PyTypeObject GenotypeCallsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vcf_agent.analysis._local_wire.GenotypeCalls",
    .tp_basicsize = sizeof(GenotypeCalls),
    .tp_dealloc = (destructor)calls_dealloc,
    .tp_repr = (reprfunc)calls_repr,
    .tp_as_sequence = &calls_as_sequence,
    .tp_as_mapping = &calls_as_mapping,
    .tp_hash = (hashfunc)calls_hash,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_SEQUENCE,
    .tp_doc = "A variant's genotype calls as a sequence of (sample, alleles, depth, genotype_quality,"
              " allele_depths), read from the wire when used.",
    .tp_richcompare = calls_richcompare,
    .tp_iter = (getiterfunc)calls_iter,
};

/* A GenotypeColumns message's calls (the empty tuple for none); NULL, with an exception set only on
 * a Python failure, when it is not the plain case. Holds no Python value of a call, only a copy of
 * the message. */
static PyObject *genotype_columns(const uint8_t *p, const uint8_t *end) {
    Field columns[C_COUNT];
    Py_ssize_t samples;
    if (checked_columns(p, end, columns, &samples) < 0)
        return NULL;
    if (samples == 0)
        return PyTuple_New(0);
    GenotypeCalls *calls = PyObject_New(GenotypeCalls, &GenotypeCallsType);
    if (calls == NULL)
        return NULL;
    calls->calls = NULL;
    calls->samples = samples;
    calls->wire = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)(end - p));
    if (calls->wire == NULL) {
        Py_DECREF(calls);
        return NULL;
    }
    const uint8_t *copy = (const uint8_t *)PyBytes_AS_STRING(calls->wire);
    for (int column = 0; column < C_COUNT; column++) {
        calls->columns[column] = columns[column];
        if (columns[column].data != NULL)
            calls->columns[column].data = copy + (columns[column].data - p);
    }
    return (PyObject *)calls;
}

/* ---- VariantMessage ---- */

static PyStructSequence_Field variant_fields[] = {
    {"correlation_id", NULL},
    {"job_id", NULL},
    {"tenant_id", NULL},
    {"chromosome", NULL},
    {"position", NULL},
    {"reference", NULL},
    {"alternate", NULL},
    {"alt_index", NULL},
    {"all_alternates", NULL},
    {"has_quality", NULL},
    {"quality", NULL},
    {"filters", NULL},
    {"info", NULL},
    {"genotypes", NULL},
    {NULL, NULL},
};

enum {
    V_CORRELATION_ID,
    V_JOB_ID,
    V_TENANT_ID,
    V_CHROMOSOME,
    V_POSITION,
    V_REFERENCE,
    V_ALTERNATE,
    V_ALT_INDEX,
    V_ALL_ALTERNATES,
    V_HAS_QUALITY,
    V_QUALITY,
    V_FILTERS,
    V_INFO,
    V_GENOTYPES,
    V_COUNT
};

static PyStructSequence_Desc variant_desc = {
    "VariantFields",
    "What the local annotator reads of a VariantMessage, as plain values.",
    variant_fields,
    V_COUNT,
};

static PyTypeObject VariantFieldsType;

/* The scalars, kept as C values until the variant is complete. */
typedef struct {
    int64_t position;
    int32_t alt_index;
    int has_quality;
    double quality;
} Scalars;

/* Where each string field that is returned goes; -1 for the rest. */
static int string_slot(uint32_t number) {
    switch (number) {
    case VARIANT_MESSAGE_CORRELATION_ID:
        return V_CORRELATION_ID;
    case VARIANT_MESSAGE_JOB_ID:
        return V_JOB_ID;
    case VARIANT_MESSAGE_TENANT_ID:
        return V_TENANT_ID;
    case VARIANT_MESSAGE_CHROMOSOME:
        return V_CHROMOSOME;
    case VARIANT_MESSAGE_REFERENCE:
        return V_REFERENCE;
    case VARIANT_MESSAGE_ALTERNATE:
        return V_ALTERNATE;
    default:
        return -1;
    }
}

/* A google.protobuf.Timestamp, only checked: seconds and nanos are varints. */
static int timestamp_valid(const uint8_t *p, const uint8_t *end) {
    Field f;
    int more;
    while ((more = next_field(&p, end, &f)) == 1) {
        if ((f.number == TIMESTAMP_SECONDS || f.number == TIMESTAMP_NANOS) && f.wire != WIRE_VARINT)
            return -1;
    }
    return more;
}

/* Reads one field of a VariantMessage into `items` or `scalars`. */
static int variant_field(PyObject **items, Scalars *scalars, const Field *f) {
    int slot = string_slot(f->number);
    if (slot >= 0)
        return set_text(&items[slot], f);
    switch (f->number) {
    case VARIANT_MESSAGE_FILE_ID:
    case VARIANT_MESSAGE_ID:
    case VARIANT_MESSAGE_SOURCE_NAME: /* not read, but upb checks them */
        return f->wire == WIRE_LEN && utf8_valid(f->data, f->len) ? 0 : -1;
    case VARIANT_MESSAGE_RECORD_INDEX:
    case VARIANT_MESSAGE_LINE_NUMBER:
        return f->wire == WIRE_VARINT ? 0 : -1;
    case VARIANT_MESSAGE_POSITION:
    case VARIANT_MESSAGE_ALT_INDEX:
    case VARIANT_MESSAGE_HAS_QUALITY:
        if (f->wire != WIRE_VARINT)
            return -1;
        if (f->number == VARIANT_MESSAGE_POSITION)
            scalars->position = (int64_t)f->value;
        else if (f->number == VARIANT_MESSAGE_ALT_INDEX)
            scalars->alt_index = (int32_t)f->value;
        else
            scalars->has_quality = f->value != 0;
        return 0;
    case VARIANT_MESSAGE_QUALITY:
        if (f->wire != WIRE_FIXED64)
            return -1;
        memcpy(&scalars->quality, &f->value, 8);
        return 0;
    case VARIANT_MESSAGE_ALL_ALTERNATES:
        return append(items[V_ALL_ALTERNATES], text(f));
    case VARIANT_MESSAGE_FILTERS:
        return append(items[V_FILTERS], text(f));
    case VARIANT_MESSAGE_INFO:
        return f->wire == WIRE_LEN ? info_entry(items[V_INFO], f->data, f->data + f->len) : -1;
    case VARIANT_MESSAGE_GENOTYPES:
        /* A second occurrence would be merged into the first: left to protobuf. */
        if (f->wire != WIRE_LEN || items[V_GENOTYPES] != NULL)
            return -1;
        items[V_GENOTYPES] = genotype_columns(f->data, f->data + f->len);
        return items[V_GENOTYPES] == NULL ? -1 : 0;
    case VARIANT_MESSAGE_TIMESTAMP:
        return f->wire == WIRE_LEN ? timestamp_valid(f->data, f->data + f->len) : -1;
    default:
        return 0;
    }
}

/* Fills the slots the wire data left empty with proto3's defaults and the scalars. */
static int fill_defaults(PyObject **items, const Scalars *scalars) {
    for (int slot = V_CORRELATION_ID; slot <= V_ALTERNATE; slot++) {
        if (items[slot] == NULL && slot != V_POSITION &&
            (items[slot] = PyUnicode_FromStringAndSize("", 0)) == NULL)
            return -1;
    }
    items[V_POSITION] = PyLong_FromLongLong(scalars->position);
    items[V_ALT_INDEX] = PyLong_FromLong(scalars->alt_index);
    items[V_HAS_QUALITY] = PyBool_FromLong(scalars->has_quality);
    items[V_QUALITY] = PyFloat_FromDouble(scalars->quality);
    items[V_ALL_ALTERNATES] = frozen(items[V_ALL_ALTERNATES]);
    items[V_FILTERS] = frozen(items[V_FILTERS]);
    if (items[V_GENOTYPES] == NULL)
        items[V_GENOTYPES] = PyTuple_New(0);
    for (int slot = 0; slot < V_COUNT; slot++) {
        if (items[slot] == NULL)
            return -1;
    }
    return 0;
}

/* One VariantMessage as VariantFields; NULL, with an exception set only on a Python failure. */
static PyObject *variant(const uint8_t *p, const uint8_t *end) {
    PyObject *items[V_COUNT] = {NULL};
    Scalars scalars = {0, 0, 0, 0.0};
    Field f;
    int more = -1;
    items[V_ALL_ALTERNATES] = PyList_New(0);
    items[V_FILTERS] = PyList_New(0);
    items[V_INFO] = PyDict_New();
    if (items[V_ALL_ALTERNATES] && items[V_FILTERS] && items[V_INFO]) {
        while ((more = next_field(&p, end, &f)) == 1 && variant_field(items, &scalars, &f) == 0) {
        }
    }
    PyObject *fields = NULL;
    if (more == 0 && fill_defaults(items, &scalars) == 0)
        fields = PyStructSequence_New(&VariantFieldsType);
    for (int slot = 0; slot < V_COUNT; slot++) {
        if (fields != NULL)
            PyStructSequence_SET_ITEM(fields, slot, items[slot]);
        else
            Py_XDECREF(items[slot]);
    }
    return fields;
}

/* ---- VariantBatch ---- */

/* The batch's variants; NULL, with an exception set only on a Python failure. */
static PyObject *batch_variants(const uint8_t *p, const uint8_t *end) {
    PyObject *variants = PyList_New(0);
    Field f;
    int more = -1, failed = variants == NULL;
    while (!failed && (more = next_field(&p, end, &f)) == 1) {
        if (f.number == VARIANT_BATCH_VARIANTS)
            failed = f.wire != WIRE_LEN || append(variants, variant(f.data, f.data + f.len));
        else if (f.number == VARIANT_BATCH_PROVIDERS)
            failed = f.wire != WIRE_LEN || !utf8_valid(f.data, f.len);
        else if (f.number == VARIANT_BATCH_PRIORITY)
            failed = f.wire != WIRE_VARINT;
    }
    if (failed || more < 0)
        Py_CLEAR(variants);
    return variants;
}

static PyObject *read_variants(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *start = view.buf;
    PyObject *variants = batch_variants(start, start + view.len);
    PyBuffer_Release(&view);
    if (variants == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return variants;
}

/* ---- AnalysisResult ---- */

/* A growable output buffer; `failed` is set once anything could not be written. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} Out;

static void put(Out *out, const void *src, size_t n) {
    /* An empty message's body may have no buffer at all: memcpy must not see its NULL. */
    if (out->failed || n == 0)
        return;
    if (out->len + n > out->cap) {
        size_t cap = out->cap ? out->cap : 512;
        while (cap < out->len + n)
            cap *= 2;
        char *p = PyMem_Realloc(out->p, cap);
        if (p == NULL) {
            PyErr_NoMemory();
            out->failed = 1;
            return;
        }
        out->p = p;
        out->cap = cap;
    }
    memcpy(out->p + out->len, src, n);
    out->len += n;
}

static void put_varint(Out *out, uint64_t value) {
    uint8_t bytes[10];
    size_t n = 0;
    do {
        bytes[n++] = (uint8_t)(value & 0x7f) | (value > 0x7f ? 0x80 : 0);
        value >>= 7;
    } while (value);
    put(out, bytes, n);
}

static void put_tag(Out *out, uint32_t number, int wire) { put_varint(out, (uint64_t)number << 3 | wire); }

/* A string field; `keep_empty` for an element of a repeated field, which keeps "" unlike proto3 singulars. */
static void put_text(Out *out, uint32_t number, PyObject *text, int keep_empty) {
    Py_ssize_t size;
    const char *data = out->failed ? NULL : PyUnicode_AsUTF8AndSize(text, &size);
    if (data == NULL) {
        out->failed = 1;
        return;
    }
    if (size == 0 && !keep_empty)
        return;
    put_tag(out, number, WIRE_LEN);
    put_varint(out, (uint64_t)size);
    put(out, data, (size_t)size);
}

/* Every element of a list or tuple of strings. */
static void put_texts(Out *out, uint32_t number, PyObject *texts) {
    PyObject *items = out->failed ? NULL : PySequence_Fast(texts, "a list of strings");
    if (items == NULL) {
        out->failed = 1;
        return;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); i++)
        put_text(out, number, PySequence_Fast_ITEMS(items)[i], 1);
    Py_DECREF(items);
}

/* A double field; proto3 leaves out +0.0 only (the default, bit for bit), not -0.0. */
static void put_double(Out *out, uint32_t number, PyObject *value) {
    double number_value = out->failed ? 0.0 : PyFloat_AsDouble(value);
    if (out->failed || (number_value == -1.0 && PyErr_Occurred())) {
        out->failed = 1;
        return;
    }
    if (number_value == 0.0 && !signbit(number_value))
        return;
    put_tag(out, number, WIRE_FIXED64);
    put(out, &number_value, 8); /* little-endian, as the wire format and every supported host */
}

/* A varint field of a non-negative int (bool and int32 here); proto3 leaves out 0. */
static void put_count(Out *out, uint32_t number, PyObject *value) {
    long count = out->failed ? 0 : PyLong_AsLong(value);
    if (out->failed || (count == -1 && PyErr_Occurred()) || count < 0 || count > INT32_MAX) {
        if (!out->failed && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a count out of int32 range");
        out->failed = 1;
        return;
    }
    if (count == 0)
        return;
    put_tag(out, number, WIRE_VARINT);
    put_varint(out, (uint64_t)count);
}

/* A message field from the bytes written into `body`. */
static void put_message(Out *out, uint32_t number, const Out *body) {
    if (body->failed) {
        out->failed = 1;
        return;
    }
    put_tag(out, number, WIRE_LEN);
    put_varint(out, body->len);
    put(out, body->p, body->len);
}

/* SampleFinding from (sample, zygosity, allele_balance, call_quality), or encoded_findings' bytes. */
static void put_findings(Out *out, PyObject *findings) {
    if (!out->failed && PyBytes_Check(findings)) {
        /* encoded_findings' bytes: the samples fields already written. */
        put(out, PyBytes_AS_STRING(findings), (size_t)PyBytes_GET_SIZE(findings));
        return;
    }
    PyObject *items = out->failed ? NULL : PySequence_Fast(findings, "a list of findings");
    Out body = {NULL, 0, 0, 0};
    if (items == NULL) {
        out->failed = 1;
        return;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items) && !out->failed; i++) {
        PyObject *finding = PySequence_Fast_ITEMS(items)[i];
        if (!PyTuple_Check(finding) || PyTuple_GET_SIZE(finding) != 4) {
            PyErr_SetString(PyExc_TypeError, "a finding is a 4-tuple");
            out->failed = 1;
            break;
        }
        body.len = 0;
        put_text(&body, SAMPLE_FINDING_SAMPLE, PyTuple_GET_ITEM(finding, 0), 0);
        put_text(&body, SAMPLE_FINDING_ZYGOSITY, PyTuple_GET_ITEM(finding, 1), 0);
        put_double(&body, SAMPLE_FINDING_ALLELE_BALANCE, PyTuple_GET_ITEM(finding, 2));
        put_text(&body, SAMPLE_FINDING_CALL_QUALITY, PyTuple_GET_ITEM(finding, 3), 0);
        put_message(out, LOCAL_ANNOTATION_SAMPLES, &body);
    }
    PyMem_Free(body.p);
    Py_DECREF(items);
}

/* AcmgCriterion from (code, strength, met, value, source, rule). */
static void put_criteria(Out *out, PyObject *criteria) {
    PyObject *items = out->failed ? NULL : PySequence_Fast(criteria, "a list of criteria");
    Out body = {NULL, 0, 0, 0};
    if (items == NULL) {
        out->failed = 1;
        return;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items) && !out->failed; i++) {
        PyObject *criterion = PySequence_Fast_ITEMS(items)[i];
        if (!PyTuple_Check(criterion) || PyTuple_GET_SIZE(criterion) != 6) {
            PyErr_SetString(PyExc_TypeError, "a criterion is a 6-tuple");
            out->failed = 1;
            break;
        }
        body.len = 0;
        put_text(&body, ACMG_CRITERION_CODE, PyTuple_GET_ITEM(criterion, 0), 0);
        put_text(&body, ACMG_CRITERION_STRENGTH, PyTuple_GET_ITEM(criterion, 1), 0);
        put_count(&body, ACMG_CRITERION_MET, PyTuple_GET_ITEM(criterion, 2));
        put_text(&body, ACMG_CRITERION_VALUE, PyTuple_GET_ITEM(criterion, 3), 0);
        put_text(&body, ACMG_CRITERION_SOURCE, PyTuple_GET_ITEM(criterion, 4), 0);
        put_text(&body, ACMG_CRITERION_RULE, PyTuple_GET_ITEM(criterion, 5), 0);
        put_message(out, LOCAL_ANNOTATION_ACMG_CRITERIA, &body);
    }
    PyMem_Free(body.p);
    Py_DECREF(items);
}

/* The arguments of encode_answer, in its order: each field's number, or what else it is. */
enum {
    A_CORRELATION_ID,
    A_JOB_ID,
    A_TENANT_ID,
    A_FIXED, /* fields 4 to 6, the same bytes in every answer */
    A_CLASSIFICATION,
    A_CONFIDENCE,
    A_CRITERIA,
    A_RATIONALE,
    A_VARIANT_CLASS,
    A_SUBSTITUTION,
    A_MULTI_ALLELIC,
    A_ALLELE_COUNT,
    A_QUALITY_TIER,
    A_FREQUENCY_TIER,
    A_POPULATION_AF,
    A_CONSEQUENCE,
    A_IMPACT,
    A_GENE,
    A_HGVS_C,
    A_HGVS_P,
    A_CLINVAR_SIGNIFICANCE,
    A_OVERLAPPING_GENES,
    A_PRIORITY_TIER,
    A_PRIORITY_REASONS,
    A_SAMPLES,
    A_SV_TYPE,
    A_ACMG_CRITERIA,
    A_POPULATION_AF_SOURCE,
    A_CLINVAR_REVIEW_STATUS,
    A_CLINVAR_CONFLICTS,
    A_CLINVAR_SOURCE,
    A_TRANSCRIPT,
    A_BIOTYPE,
    A_TRANSCRIPT_CHOICE,
    A_COUNT
};

/* LocalAnnotation's field of each argument from A_VARIANT_CLASS on. */
static const uint32_t ANNOTATION_FIELDS[A_COUNT - A_VARIANT_CLASS] = {
    LOCAL_ANNOTATION_VARIANT_CLASS,
    LOCAL_ANNOTATION_SUBSTITUTION,
    LOCAL_ANNOTATION_MULTI_ALLELIC,
    LOCAL_ANNOTATION_ALLELE_COUNT,
    LOCAL_ANNOTATION_QUALITY_TIER,
    LOCAL_ANNOTATION_FREQUENCY_TIER,
    LOCAL_ANNOTATION_POPULATION_AF,
    LOCAL_ANNOTATION_CONSEQUENCE,
    LOCAL_ANNOTATION_IMPACT,
    LOCAL_ANNOTATION_GENE,
    LOCAL_ANNOTATION_HGVS_C,
    LOCAL_ANNOTATION_HGVS_P,
    LOCAL_ANNOTATION_CLINVAR_SIGNIFICANCE,
    LOCAL_ANNOTATION_OVERLAPPING_GENES,
    LOCAL_ANNOTATION_PRIORITY_TIER,
    LOCAL_ANNOTATION_PRIORITY_REASONS,
    LOCAL_ANNOTATION_SAMPLES,
    LOCAL_ANNOTATION_SV_TYPE,
    LOCAL_ANNOTATION_ACMG_CRITERIA,
    LOCAL_ANNOTATION_POPULATION_AF_SOURCE,
    LOCAL_ANNOTATION_CLINVAR_REVIEW_STATUS,
    LOCAL_ANNOTATION_CLINVAR_CONFLICTS,
    LOCAL_ANNOTATION_CLINVAR_SOURCE,
    LOCAL_ANNOTATION_TRANSCRIPT,
    LOCAL_ANNOTATION_BIOTYPE,
    LOCAL_ANNOTATION_TRANSCRIPT_CHOICE,
};

/* LocalAnnotation, in field-number order (the arguments' order). */
static void put_annotation(Out *out, PyObject *const *args) {
    for (int arg = A_VARIANT_CLASS; arg <= A_TRANSCRIPT_CHOICE; arg++) {
        uint32_t number = ANNOTATION_FIELDS[arg - A_VARIANT_CLASS];
        if (arg == A_MULTI_ALLELIC || arg == A_ALLELE_COUNT)
            put_count(out, number, args[arg]);
        else if (arg == A_POPULATION_AF)
            put_double(out, number, args[arg]);
        else if (arg == A_OVERLAPPING_GENES || arg == A_PRIORITY_REASONS)
            put_texts(out, number, args[arg]);
        else if (arg == A_SAMPLES)
            put_findings(out, args[arg]);
        else if (arg == A_ACMG_CRITERIA)
            put_criteria(out, args[arg]);
        else
            put_text(out, number, args[arg], 0);
    }
}

static PyObject *encode_answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != A_COUNT) {
        PyErr_Format(PyExc_TypeError, "encode_answer takes %d arguments", A_COUNT);
        return NULL;
    }
    Out out = {NULL, 0, 0, 0}, annotation = {NULL, 0, 0, 0};
    char *fixed;
    Py_ssize_t fixed_len;
    put_text(&out, ANALYSIS_RESULT_CORRELATION_ID, args[A_CORRELATION_ID], 0);
    put_text(&out, ANALYSIS_RESULT_JOB_ID, args[A_JOB_ID], 0);
    put_text(&out, ANALYSIS_RESULT_TENANT_ID, args[A_TENANT_ID], 0);
    if (PyBytes_AsStringAndSize(args[A_FIXED], &fixed, &fixed_len) < 0)
        out.failed = 1;
    else
        put(&out, fixed, (size_t)fixed_len);
    put_text(&out, ANALYSIS_RESULT_CLASSIFICATION, args[A_CLASSIFICATION], 0);
    put_double(&out, ANALYSIS_RESULT_CONFIDENCE, args[A_CONFIDENCE]);
    put_texts(&out, ANALYSIS_RESULT_CRITERIA, args[A_CRITERIA]);
    put_text(&out, ANALYSIS_RESULT_RATIONALE, args[A_RATIONALE], 0);
    /* After a failure an exception is pending, and no further Python call may run. */
    if (!out.failed)
        put_annotation(&annotation, args);
    put_message(&out, ANALYSIS_RESULT_ANNOTATION, &annotation);
    PyObject *answer = out.failed ? NULL : PyBytes_FromStringAndSize(out.p, (Py_ssize_t)out.len);
    PyMem_Free(out.p);
    PyMem_Free(annotation.p);
    return answer;
}

/* ---- per-sample findings ---- */

/*
 * What the annotator finds in each sample's call that is not hom-ref (_local_annotator.sample_findings
 * is the pure-Python twin and the reference, and says why hom-ref calls get none:
 * tests/router/test_sample_findings.py requires equal values). In a cohort this runs for every
 * genotype of every variant, which in Python cost more than everything else the annotator does.
 */

enum { Z_HET, Z_HET_ALT, Z_HOM_REF, Z_HOM_ALT, Z_OTHER_ALT, Z_HEMIZYGOUS, Z_NO_CALL, Z_COUNT };
static const char *const zygosity_names[Z_COUNT] = {
    "het", "het_alt", "hom_ref", "hom_alt", "other_alt", "hemizygous", "no_call"};
/* _local_annotator._TIER_NAMES: the quality levels 0..4, 4 when QUAL is missing. */
static const char *const tier_names[5] = {"fail", "low", "medium", "high", "unknown"};
static PyObject *zygosity_text[Z_COUNT];
static PyObject *tier_text[5];

/* A tuple of ints as a C array (`*values` is `buffer` when it fits, else PyMem_Malloc'd); -1 on error. */
static Py_ssize_t int_items(PyObject *tuple, long long *buffer, Py_ssize_t room, long long **values) {
    if (!PyTuple_Check(tuple)) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of ints");
        return -1;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(tuple);
    *values = count <= room ? buffer : PyMem_Malloc(sizeof(long long) * (size_t)count);
    if (*values == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        (*values)[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, i));
        if ((*values)[i] == -1 && PyErr_Occurred()) {
            if (*values != buffer)
                PyMem_Free(*values);
            *values = NULL;
            return -1;
        }
    }
    return count;
}

/* _local_annotator.zygosity */
static int zygosity_of(const long long *alleles, Py_ssize_t count, long long allele) {
    if (count == 2) {
        long long first = alleles[0], second = alleles[1];
        if (first < 0 || second < 0) {
            if (first < 0 && second < 0)
                return Z_NO_CALL;
            return allele == first || allele == second ? Z_HET : Z_NO_CALL;
        }
        if (first == second)
            return first == 0 ? Z_HOM_REF : first == allele ? Z_HOM_ALT : Z_OTHER_ALT;
        if (allele == first || allele == second)
            return first == 0 || second == 0 ? Z_HET : Z_HET_ALT;
        return Z_OTHER_ALT;
    }
    if (count == 0)
        return Z_NO_CALL;
    int missing = 0, has_allele = 0, has_zero = 0, all_zero = 1, all_same = 1, only_zero_or_allele = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        long long value = alleles[i];
        missing |= value == -1;
        has_allele |= value == allele;
        has_zero |= value == 0;
        all_zero &= value == 0;
        all_same &= value == alleles[0];
        only_zero_or_allele &= value == 0 || value == allele;
    }
    if (missing)
        return has_allele ? Z_HET : Z_NO_CALL;
    if (count == 1)
        return alleles[0] == allele ? Z_HEMIZYGOUS : alleles[0] == 0 ? Z_HOM_REF : Z_OTHER_ALT;
    if (all_zero)
        return Z_HOM_REF;
    if (!has_allele)
        return Z_OTHER_ALT;
    if (all_same)
        return Z_HOM_ALT;
    return only_zero_or_allele && has_zero ? Z_HET : Z_HET_ALT;
}

/* _local_annotator.call_quality */
static int call_quality_of(long long gq, long long dp, int record_level) {
    int level = 4; /* neither seen yet: above any level GQ or DP gives */
    if (gq >= 0)
        level = gq >= 30 ? 3 : gq >= 15 ? 2 : 1;
    if (dp >= 0) {
        int dp_level = dp >= 20 ? 3 : dp >= 10 ? 2 : 1;
        if (dp_level < level)
            level = dp_level;
    }
    return level == 4 ? record_level : level;
}

/* _local_annotator.allele_balance, with Python's indexing (a negative allele counts from the end);
 * -2 with IndexError set where Python raises it. */
static double allele_balance_of(const long long *depths, Py_ssize_t count, long long allele) {
    if (allele >= 0 && count <= allele)
        return -1.0;
    long long index = allele >= 0 ? allele : count + allele;
    if (index < 0) {
        PyErr_SetString(PyExc_IndexError, "tuple index out of range");
        return -2.0;
    }
    long long alt = depths[index], total = 0, lowest = depths[0];
    for (Py_ssize_t i = 0; i < count; i++) {
        total += depths[i];
        if (depths[i] < lowest)
            lowest = depths[i];
    }
    if (total && lowest < 0) {
        /* Some producers write -1 for a missing depth; it must not shrink the total. */
        total = 0;
        for (Py_ssize_t i = 0; i < count; i++)
            total += depths[i] > 0 ? depths[i] : 0;
    }
    if (alt < 0 || total <= 0)
        return -1.0;
    /* Both exact in a double (|n| < 2**53), as in CPython's int / int: the same quotient. */
    return (double)alt / (double)total;
}

/* One (sample, zygosity, allele_balance, call_quality) from (sample, alleles, depth, gq, allele_depths);
 * a new reference to None for a hom-ref call, which gets no finding. */
static PyObject *finding(PyObject *call, long long allele, int failed, int record_level) {
    long long alleles_buffer[8], depths_buffer[8], *alleles = NULL, *depths = NULL;
    if (!PyTuple_Check(call) || PyTuple_GET_SIZE(call) != 5) {
        PyErr_SetString(PyExc_TypeError, "a genotype is a 5-tuple");
        return NULL;
    }
    long long dp = PyLong_AsLongLong(PyTuple_GET_ITEM(call, 2));
    long long gq = dp == -1 && PyErr_Occurred() ? -1 : PyLong_AsLongLong(PyTuple_GET_ITEM(call, 3));
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t allele_count = int_items(PyTuple_GET_ITEM(call, 1), alleles_buffer, 8, &alleles);
    if (allele_count < 0)
        return NULL;
    Py_ssize_t depth_count = int_items(PyTuple_GET_ITEM(call, 4), depths_buffer, 8, &depths);
    PyObject *result = NULL;
    if (depth_count >= 0) {
        int zyg = zygosity_of(alleles, allele_count, allele);
        if (zyg == Z_HOM_REF) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        int level = failed || zyg == Z_NO_CALL ? 0 : call_quality_of(gq, dp, record_level);
        double balance = depth_count ? allele_balance_of(depths, depth_count, allele) : -1.0;
        PyObject *number = PyErr_Occurred() ? NULL : PyFloat_FromDouble(balance);
        if (number != NULL) {
            result = PyTuple_Pack(4, PyTuple_GET_ITEM(call, 0), zygosity_text[zyg], number, tier_text[level]);
            Py_DECREF(number);
        }
    }
done:
    if (alleles != alleles_buffer)
        PyMem_Free(alleles);
    if (depths != NULL && depths != depths_buffer)
        PyMem_Free(depths);
    return result;
}

/* Room for `count` values at *values: `buffer` (of *room) while they fit, else a heap block; -1 on no memory. */
static int room_for(long long **values, long long *buffer, Py_ssize_t *room, Py_ssize_t count) {
    if (count <= *room)
        return 0;
    long long *bigger = PyMem_Malloc(sizeof(long long) * (size_t)count);
    if (bigger == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (*values != buffer)
        PyMem_Free(*values);
    *values = bigger;
    *room = count;
    return 0;
}

/* The next `count` sint32 values of a column into *values (grown past `buffer` when need be); -1 on no memory. */
static int read_sint32s(long long **values, long long *buffer, Py_ssize_t *room, Py_ssize_t count,
                        const uint8_t **cursor, const uint8_t *end) {
    if (room_for(values, buffer, room, count) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < count; i++)
        (*values)[i] = unzigzag(next_packed(cursor, end));
    return 0;
}

/* A finding written as a LocalAnnotation `samples` field, as upb serializes a SampleFinding; the
 * message is built in `body_buffer`, reused from one finding to the next. */
static void put_finding(Out *out, Out *body_buffer, const Field *sample, int zyg, double balance, int level) {
    Out body = *body_buffer;
    body.len = 0;
    if (sample->len) {
        put_tag(&body, SAMPLE_FINDING_SAMPLE, WIRE_LEN);
        put_varint(&body, sample->len);
        put(&body, sample->data, sample->len);
    }
    size_t zygosity_len = strlen(zygosity_names[zyg]), tier_len = strlen(tier_names[level]);
    put_tag(&body, SAMPLE_FINDING_ZYGOSITY, WIRE_LEN);
    put_varint(&body, zygosity_len);
    put(&body, zygosity_names[zyg], zygosity_len);
    /* proto3 leaves out +0.0 only (the default, bit for bit), not -0.0. */
    if (balance != 0.0 || signbit(balance)) {
        put_tag(&body, SAMPLE_FINDING_ALLELE_BALANCE, WIRE_FIXED64);
        put(&body, &balance, 8);
    }
    put_tag(&body, SAMPLE_FINDING_CALL_QUALITY, WIRE_LEN);
    put_varint(&body, tier_len);
    put(&body, tier_names[level], tier_len);
    put_message(out, LOCAL_ANNOTATION_SAMPLES, &body);
    *body_buffer = body; /* its buffer, grown or not, serves the next finding */
}

/* The findings of GenotypeCalls, read from its columns: appended to `list` as tuples, or written to
 * `out` as encoded fields (list NULL); -1 with an exception set. */
static int column_findings(GenotypeCalls *self, long long allele, int failed, int record_level, PyObject *list,
                           Out *out) {
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(self->wire);
    const uint8_t *end = p + PyBytes_GET_SIZE(self->wire);
    const Field *columns = self->columns;
    const uint8_t *cursor[C_COUNT];
    for (int column = 0; column < C_COUNT; column++)
        cursor[column] = columns[column].data;
    const uint8_t *alleles_end = columns[C_ALLELES].data + columns[C_ALLELES].len;
    const uint8_t *depths_end = columns[C_ALLELE_DEPTHS].data + columns[C_ALLELE_DEPTHS].len;
    long long alleles_buffer[8], depths_buffer[8];
    long long *alleles = alleles_buffer, *depths = depths_buffer;
    Py_ssize_t alleles_room = 8, depths_room = 8;
    int result = 0;
    Out body = {NULL, 0, 0, 0};
    Field f = {0};
    for (Py_ssize_t index = 0; result == 0 && index < self->samples; index++) {
        do {
            next_field(&p, end, &f);
        } while (f.number != GENOTYPE_COLUMNS_SAMPLES);
        Py_ssize_t ploidy = (uint32_t)next_in(columns, cursor, C_PLOIDY, 0);
        if (read_sint32s(&alleles, alleles_buffer, &alleles_room, ploidy, &cursor[C_ALLELES], alleles_end) < 0) {
            result = -1;
            break;
        }
        long long dp = unzigzag(next_in(columns, cursor, C_DEPTH, 1));
        long long gq = unzigzag(next_in(columns, cursor, C_QUALITY, 1));
        Py_ssize_t count = (uint32_t)next_in(columns, cursor, C_AD_COUNTS, 0);
        if (read_sint32s(&depths, depths_buffer, &depths_room, count, &cursor[C_ALLELE_DEPTHS], depths_end) < 0) {
            result = -1;
            break;
        }
        int zyg = zygosity_of(alleles, ploidy, allele);
        if (zyg == Z_HOM_REF)
            continue;
        int level = failed || zyg == Z_NO_CALL ? 0 : call_quality_of(gq, dp, record_level);
        double balance = count ? allele_balance_of(depths, count, allele) : -1.0;
        if (PyErr_Occurred()) {
            result = -1;
            break;
        }
        if (list == NULL) {
            put_finding(out, &body, &f, zyg, balance, level);
            if (out->failed) /* put() set the MemoryError */
                result = -1;
            continue;
        }
        PyObject *sample = text(&f);
        if (sample == NULL && !PyErr_Occurred()) /* checked_columns checked every name */
            PyErr_SetString(PyExc_ValueError, "a sample name is not UTF-8");
        PyObject *number = sample == NULL ? NULL : PyFloat_FromDouble(balance);
        PyObject *item = number == NULL ? NULL : PyTuple_Pack(4, sample, zygosity_text[zyg], number, tier_text[level]);
        Py_XDECREF(sample);
        Py_XDECREF(number);
        if (item == NULL || PyList_Append(list, item) < 0)
            result = -1;
        Py_XDECREF(item);
    }
    PyMem_Free(body.p);
    if (alleles != alleles_buffer)
        PyMem_Free(alleles);
    if (depths != depths_buffer)
        PyMem_Free(depths);
    return result;
}

/* The arguments of sample_findings and encoded_findings: -1 with an exception set. */
static int findings_arguments(PyObject *const *args, Py_ssize_t nargs, const char *name, long long *allele,
                              int *failed, int *record_level) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s takes 4 arguments", name);
        return -1;
    }
    *allele = PyLong_AsLongLong(args[1]);
    *failed = PyObject_IsTrue(args[2]);
    long level = PyLong_AsLong(args[3]);
    if (PyErr_Occurred() || *failed < 0)
        return -1;
    if (level < 0 || level > 4) {
        PyErr_SetString(PyExc_ValueError, "record_level is 0 to 4");
        return -1;
    }
    *record_level = (int)level;
    return 0;
}

static PyObject *sample_findings(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    long long allele;
    int failed, record_level;
    if (findings_arguments(args, nargs, "sample_findings", &allele, &failed, &record_level) < 0)
        return NULL;
    PyObject *findings = PyList_New(0);
    if (findings != NULL && Py_IS_TYPE(args[0], &GenotypeCallsType)) {
        if (column_findings((GenotypeCalls *)args[0], allele, failed, record_level, findings, NULL) < 0)
            Py_CLEAR(findings);
        return findings;
    }
    PyObject *calls = findings == NULL ? NULL : PySequence_Fast(args[0], "genotypes are a sequence");
    if (calls == NULL) {
        Py_XDECREF(findings);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(calls);
    for (Py_ssize_t i = 0; findings != NULL && i < count; i++) {
        PyObject *item = finding(PySequence_Fast_ITEMS(calls)[i], allele, failed, record_level);
        if (item == NULL || (item != Py_None && PyList_Append(findings, item) < 0))
            Py_CLEAR(findings);
        Py_XDECREF(item);
    }
    Py_DECREF(calls);
    return findings;
}

/* sample_findings' findings already encoded as LocalAnnotation `samples` fields, for encode_answer:
 * from GenotypeCalls no Python value is made for a call or a finding. */
static PyObject *encoded_findings(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    long long allele;
    int failed, record_level;
    if (findings_arguments(args, nargs, "encoded_findings", &allele, &failed, &record_level) < 0)
        return NULL;
    Out out = {NULL, 0, 0, 0};
    if (Py_IS_TYPE(args[0], &GenotypeCallsType)) {
        if (column_findings((GenotypeCalls *)args[0], allele, failed, record_level, NULL, &out) < 0) {
            PyMem_Free(out.p);
            return NULL;
        }
    } else {
        PyObject *findings = sample_findings(module, args, nargs);
        if (findings == NULL)
            return NULL;
        put_findings(&out, findings);
        Py_DECREF(findings);
        if (out.failed) {
            PyMem_Free(out.p);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return NULL;
        }
    }
    PyObject *encoded = PyBytes_FromStringAndSize(out.p, (Py_ssize_t)out.len);
    PyMem_Free(out.p);
    return encoded;
}

/* ---- results written variant first (schema/_variant_first.py): spliced, and split back ---- */

/* The tags a spliced result begins with: the batch's `results` field, then the result's `variant`. */
static const uint8_t results_tag[] = ANALYSIS_RESULT_BATCH_RESULTS_TAG;
static const uint8_t variant_tag[] = ANALYSIS_RESULT_VARIANT_TAG;
static const size_t results_tag_len = sizeof(results_tag) - 1, variant_tag_len = sizeof(variant_tag) - 1;

static PyObject *split_error(const char *why) {
    PyErr_SetString(PyExc_ValueError, why);
    return NULL;
}

/* The twin of _spliced_results.split_results_py, step by step in its order, so that both give
 * None, the same split or a ValueError for the same bytes: results the router's local worker wrote
 * (each AnalysisResult beginning with its variant field) as (variant field with its length
 * prefix, answer) and the answers alone as a serialized AnalysisResultBatch. */
static PyObject *split_results(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *begin = view.buf, *end = begin + view.len, *p = begin;
    PyObject *split = NULL, *entries = NULL;
    Out answers = {0};
    uint64_t size;
    Field f;
    int got, plain = 1;
    Py_ssize_t count = 0;
    /* A batch not beginning with a result that begins with its variant is read the ordinary way. */
    if ((size_t)(end - p) < results_tag_len || memcmp(p, results_tag, results_tag_len) != 0)
        goto not_spliced;
    p += results_tag_len;
    if (read_varint(&p, end, 10, &size)) {
        split_error("truncated field");
        goto done;
    }
    if ((size_t)(end - p) < variant_tag_len || memcmp(p, variant_tag, variant_tag_len) != 0)
        goto not_spliced;
    /* Every field framed as upb reads it; spliced only if each is a result beginning with its variant. */
    p = begin;
    while ((got = next_field(&p, end, &f)) == 1) {
        if (f.number != ANALYSIS_RESULT_BATCH_RESULTS || f.wire != WIRE_LEN || f.len < variant_tag_len ||
            memcmp(f.data, variant_tag, variant_tag_len) != 0)
            plain = 0;
        count++;
    }
    if (got < 0) {
        split_error(f.error);
        goto done;
    }
    if (!plain)
        goto not_spliced;
    if ((entries = PyList_New(count)) == NULL)
        goto done;
    p = begin;
    for (Py_ssize_t i = 0; i < count; i++) {
        next_field(&p, end, &f);
        const uint8_t *result_end = f.data + f.len, *variant = f.data + variant_tag_len;
        if (read_varint(&variant, result_end, 10, &size)) {
            split_error("truncated field");
            goto done;
        }
        if (size > (uint64_t)(result_end - variant)) {
            split_error("the variant runs past the end of its result");
            goto done;
        }
        const uint8_t *answer = variant + size;
        PyObject *entry = PyTuple_New(2);
        if (entry == NULL)
            goto done;
        PyList_SET_ITEM(entries, i, entry);
        /* The variant field with its length prefix, then the answer. */
        const uint8_t *bounds[3] = {f.data + variant_tag_len, answer, result_end};
        for (int part = 0; part < 2; part++) {
            PyObject *bytes = PyBytes_FromStringAndSize((const char *)bounds[part], bounds[part + 1] - bounds[part]);
            if (bytes == NULL)
                goto done;
            PyTuple_SET_ITEM(entry, part, bytes);
        }
        put(&answers, results_tag, results_tag_len);
        put_varint(&answers, (uint64_t)(result_end - answer));
        put(&answers, answer, (size_t)(result_end - answer));
    }
    if (answers.failed)
        goto done;
    split = Py_BuildValue("(Oy#)", entries, answers.p ? answers.p : "", (Py_ssize_t)answers.len);
    goto done;
not_spliced:
    split = Py_NewRef(Py_None);
done:
    Py_XDECREF(entries);
    PyMem_Free(answers.p);
    PyBuffer_Release(&view);
    return split;
}

/* The twin of _spliced_results.variant_batch_parts_py: (the first variant's bytes or None, how many
 * variants, the batch's other fields as they came) of a serialized VariantBatch. */
static PyObject *variant_batch_parts(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *p = view.buf, *end = p + view.len;
    const uint8_t *first = NULL, *kept_from = p;
    size_t first_len = 0;
    Py_ssize_t count = 0;
    Out rest = {0};
    PyObject *parts = NULL;
    Field f;
    int got;
    while ((got = next_field(&p, end, &f)) == 1) {
        if (f.number != VARIANT_BATCH_VARIANTS || f.wire != WIRE_LEN)
            continue;
        if (count++ == 0) {
            first = f.data;
            first_len = f.len;
        }
        put(&rest, kept_from, (size_t)(f.start - kept_from));
        kept_from = p;
    }
    if (got < 0) {
        split_error(f.error);
        goto done;
    }
    put(&rest, kept_from, (size_t)(end - kept_from));
    if (rest.failed)
        goto done;
    if (first == NULL)
        parts = Py_BuildValue("(Ony#)", Py_None, count, rest.p ? rest.p : "", (Py_ssize_t)rest.len);
    else
        parts = Py_BuildValue("(y#ny#)", (const char *)first, (Py_ssize_t)first_len, count, rest.p ? rest.p : "",
                              (Py_ssize_t)rest.len);
done:
    PyMem_Free(rest.p);
    PyBuffer_Release(&view);
    return parts;
}

/* An INFO map entry of a VariantMessage: what the splice leaves out. */
static int is_info(const Field *f) { return f->number == VARIANT_MESSAGE_INFO && f->wire == WIRE_LEN; }

/* The twin of _spliced_results.splice_results_py: the AnalysisResultBatch of `answers` (serialized
 * AnalysisResults without their variant), each with its variant from the serialized VariantBatch
 * spliced in first, INFO left out, as schema.variant_first_result writes one. */
static PyObject *splice_results(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "splice_results(variant_batch, answers)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *answers = PySequence_Fast(args[1], "answers must be a sequence of bytes");
    if (answers == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const uint8_t *p = view.buf, *end = p + view.len;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(answers), index = 0;
    Out out = {0};
    PyObject *spliced = NULL;
    Field f;
    int got;
    while ((got = next_field(&p, end, &f)) == 1) {
        if (f.number != VARIANT_BATCH_VARIANTS || f.wire != WIRE_LEN)
            continue;
        if (index >= count) {
            split_error("more variants than answers");
            goto done;
        }
        char *answer;
        Py_ssize_t answer_len;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(answers, index++), &answer, &answer_len) < 0)
            goto done;
        /* The variant's fields as they arrived, but its INFO map: only providers read INFO, and
         * the aggregator and writer would carry it on two more streams for nothing. */
        const uint8_t *q = f.data, *q_end = f.data + f.len;
        size_t kept = 0;
        Field g;
        int more;
        while ((more = next_field(&q, q_end, &g)) == 1)
            if (!is_info(&g))
                kept += (size_t)(q - g.start);
        if (more < 0) {
            split_error(g.error);
            goto done;
        }
        put(&out, results_tag, results_tag_len);
        put_varint(&out, variant_tag_len + varint_size(kept) + kept + (size_t)answer_len);
        put(&out, variant_tag, variant_tag_len);
        put_varint(&out, kept);
        for (q = f.data; next_field(&q, q_end, &g) == 1;)
            if (!is_info(&g))
                put(&out, g.start, (size_t)(q - g.start));
        put(&out, answer, (size_t)answer_len);
    }
    if (got < 0) {
        split_error(f.error);
        goto done;
    }
    if (index != count) {
        split_error("more answers than variants");
        goto done;
    }
    if (!out.failed)
        spliced = PyBytes_FromStringAndSize(out.p ? out.p : "", (Py_ssize_t)out.len);
done:
    PyMem_Free(out.p);
    Py_DECREF(answers);
    PyBuffer_Release(&view);
    return spliced;
}

static PyMethodDef module_methods[] = {
    {"read_variants", read_variants, METH_O,
     "VariantFields of each variant of a serialized VariantBatch; None unless it is the plain case."},
    {"sample_findings", (PyCFunction)(void (*)(void))sample_findings, METH_FASTCALL,
     "(sample, zygosity, allele_balance, call_quality) of each genotype (see _local_wire.pyi)."},
    {"encoded_findings", (PyCFunction)(void (*)(void))encoded_findings, METH_FASTCALL,
     "sample_findings as encoded LocalAnnotation samples fields, for encode_answer (see _local_wire.pyi)."},
    {"encode_answer", (PyCFunction)(void (*)(void))encode_answer, METH_FASTCALL,
     "A serialized AnalysisResult from its fields' values, in field-number order (see _local_wire.pyi)."},
    {"variant_batch_parts", variant_batch_parts, METH_O,
     "(first variant or None, variant count, other fields) of a serialized VariantBatch."},
    {"splice_results", (PyCFunction)(void (*)(void))splice_results, METH_FASTCALL,
     "The AnalysisResultBatch of the answers, each with its variant from the batch spliced in first."},
    {"split_results", split_results, METH_O,
     "A variant-first AnalysisResultBatch's results split and its answers alone; None for any other batch."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_local_wire", "The local provider's wire format: variants in, answers out.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__local_wire(void) {
    if (VariantFieldsType.tp_name == NULL && PyStructSequence_InitType2(&VariantFieldsType, &variant_desc) < 0)
        return NULL;
    if (PyType_Ready(&GenotypeCallsType) < 0)
        return NULL;
    for (int i = 0; i < Z_COUNT; i++) {
        if (zygosity_text[i] == NULL && (zygosity_text[i] = PyUnicode_InternFromString(zygosity_names[i])) == NULL)
            return NULL;
    }
    for (int i = 0; i < 5; i++) {
        if (tier_text[i] == NULL && (tier_text[i] = PyUnicode_InternFromString(tier_names[i])) == NULL)
            return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&VariantFieldsType);
    if (PyModule_AddObject(module, "VariantFields", (PyObject *)&VariantFieldsType) < 0) {
        Py_DECREF(&VariantFieldsType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&GenotypeCallsType);
    if (PyModule_AddObject(module, "GenotypeCalls", (PyObject *)&GenotypeCallsType) < 0) {
        Py_DECREF(&GenotypeCallsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
