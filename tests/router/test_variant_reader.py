"""Differential tests of the local provider's compiled path (_local_wire.c reading the variant
batch and encoding the answer field by field) against its protobuf path (the annotator's
`annotate`: the message read through protobuf, the answer built as a protobuf message). Both
share the rules (_evaluate), so the bytes must be equal.

Inputs are real files read by the real ingest reader (tests/data, every PyVCF3 test file), the
ingest generator's synthetic files, and randomized messages covering what those lack: several
samples, missing and partial calls, phasing, symbolic and breakend ALTs, INFO of every type,
CSQ/ANN/BCSQ and ClinVar keys, no QUAL, and positions inside the gene index's genes. Wire-level
cases and mutation fuzzing check that the reader either reads what upb reads or leaves the
payload to protobuf (None), and never fails otherwise.

Without the extension (not built, or VCF_AGENT_NO_EXTENSIONS=1) the answer tests run the provider's
pure-Python twin (every payload read and every answer built through protobuf) and the tests of the
compiled reader and encoder alone skip.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import vcf  # pyvcf3: only its bundled test files are used
from google.protobuf.message import DecodeError

from vcf_agent.analysis import analysis_requests, provider_deadline
from vcf_agent.analysis._annotation_fields import AnnotationContext
from vcf_agent.analysis._gene_index import GeneIndex
from vcf_agent.analysis._local_annotator import LocalAnnotator
from vcf_agent.analysis._providers import LocalProvider
from vcf_agent.analysis._variant_fields import read_variants, variant_fields
from vcf_agent.compiled import compiled_module
from vcf_agent.config import Settings
from vcf_agent.schema import GenotypeCall, decode_serialized, genotype_calls, genotype_columns
from vcf_agent.services.ingest._vcf_reader import VcfFileError, VcfReader
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import analysis_pb2, variant_pb2

from ._local_worker import published_answers

DATA = Path(__file__).parent / "data"
GENES_FILE = DATA / "ensembl_excerpt.gtf"
VCF_DATA = Path(__file__).parents[1] / "data" / "vcf"
PYVCF_DATA = Path(vcf.__file__).parent / "test"
PROVIDERS = ("local", "claude")
_LOCAL_WIRE = compiled_module("vcf_agent.analysis._local_wire")
needs_compiled = pytest.mark.skipif(
    _LOCAL_WIRE is None, reason="the compiled local wire format is not built or VCF_AGENT_NO_EXTENSIONS=1"
)


# --- inputs ------------------------------------------------------------------------------------


def batches_from_vcf(path: Path) -> list[bytes]:
    """Serialized VariantBatches as ingest publishes them; none for a file ingest refuses."""
    try:
        reader = VcfReader(path, file_id="f" * 64, job_id="job", tenant_id="lab", source_name=path.name)
    except VcfFileError:
        return []
    with reader:
        return [batch.payload for batch in reader.batches()]


def _genes() -> list[tuple[str, int, int]]:
    """(chromosome, 1-based start, end) of the gene rows of the gene file."""
    rows = [line.split("\t") for line in GENES_FILE.read_text().splitlines() if not line.startswith("#")]
    return [(row[0], int(row[3]), int(row[4])) for row in rows if row[2] == "gene"]


_CSQ = (
    "Allele|Consequence|IMPACT|SYMBOL|Gene|Feature_type|Feature|BIOTYPE|EXON|INTRON|HGVSc|HGVSp"
    "|CANONICAL|MAX_AF|CLIN_SIG"
)
_CONTEXT = AnnotationContext(
    csq_fields=tuple(_CSQ.split("|")), population_keys=("gnomAD_AF", "AF_popmax"), clinvar_keys=("CLNSIG",)
)
_TERMS = ("missense_variant", "stop_gained", "synonymous_variant", "intron_variant", "frameshift_variant&NMD")
_ALTS = ("A", "C", "G", "T", "AT", "<DEL>", "<DUP:TANDEM>", "<*>", "<INS>", "*", "G]2:100]", ".A", "C<ctg1>")


def _info(rng: random.Random, alts: Sequence[str]) -> dict[str, variant_pb2.InfoValue]:
    def floats(count: int) -> variant_pb2.InfoValue:
        values = [
            rng.choice((rng.random(), rng.random() / 100, 0.0, -0.0, float("nan"))) for _ in range(count)
        ]
        return variant_pb2.InfoValue(floats=variant_pb2.FloatList(values=values))

    def ints(*values: int) -> variant_pb2.InfoValue:
        return variant_pb2.InfoValue(ints=variant_pb2.IntList(values=list(values)))

    def strings(*values: str) -> variant_pb2.InfoValue:
        return variant_pb2.InfoValue(strings=variant_pb2.StringList(values=list(values)))

    def csq(alt: str) -> str:
        af = rng.choice(("", "0.0003", "0.02&0.3", "."))
        clin = rng.choice(("", "pathogenic", "benign&likely_benign"))
        canonical = rng.choice(("", "YES"))
        term, impact = rng.choice(_TERMS), rng.choice(("HIGH", "MODERATE", "LOW", ""))
        gene = f"GENE{rng.randint(1, 3)}"
        biotype = rng.choice(("protein_coding", "unprocessed_pseudogene"))
        return (
            f"{alt}|{term}|{impact}|{gene}|ENSG1|Transcript|ENST1|{biotype}|1/2||c.1A>G|p.Ser60%3D"
            f"|{canonical}|{af}|{clin}"
        )

    candidates = {
        "AF": lambda: floats(rng.choice((1, len(alts), len(alts) + 1, 3))),
        "gnomAD_AF": lambda: floats(len(alts)),
        "AF_popmax": lambda: strings(*(rng.choice(("0.01", "x", ".", "1e-4")) for _ in alts)),
        "MAX_AF": lambda: ints(*(rng.randint(0, 1) for _ in alts)),
        "CLNSIG": lambda: strings(
            rng.choice(("Pathogenic", "Likely_benign", "Conflicting_classifications", "x"))
        ),
        "CLNREVSTAT": lambda: strings("criteria_provided", "_multiple_submitters"),
        "CSQ": lambda: strings(*(csq(rng.choice(alts)) for _ in range(rng.randint(1, 3)))),
        "ANN": lambda: strings(f"{alts[0]}|missense_variant|MODERATE|G|G|transcript|T|protein_coding"),
        "BCSQ": lambda: strings("*missense|GENE|ENST|protein_coding|+|5A>5G|100A>G", "@123"),
        "CLNSIGCONF": lambda: strings("Pathogenic(1)", "Benign(2)"),
        "CSQ.Consequence": lambda: strings("stop_gained", "intron_variant"),
        "CSQ.Allele": lambda: strings(*alts[:2]),
        "SVTYPE": lambda: strings(rng.choice(("DEL", "CNV", "weird"))),
        "END": lambda: ints(rng.randint(1, 40000)),
        "SVLEN": lambda: rng.choice((ints(-rng.randint(1, 5000)), floats(1))),
        "DB": lambda: variant_pb2.InfoValue(flag=True),
        "EMPTY": variant_pb2.InfoValue,
        "DP": lambda: ints(rng.randint(-(2**40), 2**40)),
        "Ünïcode": lambda: strings("µ", ""),
    }
    chosen = rng.sample(sorted(candidates), rng.randint(0, len(candidates)))
    return {key: candidates[key]() for key in chosen}


def _genotype(rng: random.Random, alt_count: int, name: str) -> GenotypeCall:
    ploidy = rng.choice((0, 1, 2, 2, 2, 3))
    alleles = tuple(rng.choice((-1, 0, 0, *range(1, alt_count + 1))) for _ in range(ploidy))
    depths = tuple(rng.choice((-1, 0, rng.randint(0, 60))) for _ in range(rng.choice((0, alt_count + 1, 1))))
    return GenotypeCall(
        name,
        alleles,
        phased=rng.random() < 0.3,
        depth=rng.choice((-1, 0, 5, 15, 40)),
        genotype_quality=rng.choice((-1, 0, 10, 20, 99)),
        allele_depths=depths,
    )


def random_variants(seed: int, count: int) -> list[variant_pb2.VariantMessage]:
    rng = random.Random(seed)
    genes = _genes()
    samples = [f"S{i}" for i in range(rng.randint(0, 4))] + rng.choice(([], ["ß-sample"]))
    messages = []
    for index in range(count):
        alts = rng.sample(_ALTS, rng.choice((1, 1, 2, 3)))
        chromosome, start, end = rng.choice(genes)
        position = rng.choice((rng.randint(start, end), rng.randint(1, 2**31), end + 10))
        has_quality = rng.random() < 0.8
        message = variant_pb2.VariantMessage(
            correlation_id=f"c{seed}-{index}",
            job_id=rng.choice(("job", "")),
            file_id="f" * 64,
            tenant_id="lab",
            record_index=index,
            chromosome=chromosome,
            position=position,
            id=rng.choice(("", "rs1")),
            reference=rng.choice(("A", "C", "AT", "N", "ACGT")),
            alt_index=rng.randrange(len(alts)),
            all_alternates=alts,
            has_quality=has_quality,
            quality=rng.choice((0.0, 12.5, 35.0, 99.0)) if has_quality else 0.0,
            filters=rng.choice(([], ["PASS"], ["."], ["LowQual"], ["q10", "s50"])),
            genotypes=genotype_columns(_genotype(rng, len(alts), name) for name in samples)
            if samples
            else None,
            source_name="random.vcf",
        )
        message.alternate = alts[message.alt_index]
        for key, value in _info(rng, alts).items():
            message.info[key].CopyFrom(value)
        messages.append(message)
    return messages


def serialized(messages: Sequence[variant_pb2.VariantMessage]) -> bytes:
    return variant_pb2.VariantBatch(variants=messages, providers=PROVIDERS).SerializeToString()


def real_files() -> list[Path]:
    mine = sorted(VCF_DATA.glob("*.vcf*"))
    names = {path.name for path in mine}
    return [*mine, *(path for path in sorted(PYVCF_DATA.glob("*.vcf*")) if path.name not in names)]


# --- what upb reads, independently of the production code ---------------------------------------


def expected(message: variant_pb2.VariantMessage) -> tuple[Any, ...]:
    """The reader's values for a parsed message, compared by repr so NaN and -0.0 count exactly."""
    info = {}
    for key, value in message.info.items():
        kind = value.WhichOneof("value")
        values = [] if kind in (None, "flag") else getattr(value, kind).values
        info[key] = tuple(values)
    genotypes = tuple(
        (g.sample, g.alleles, g.depth, g.genotype_quality, g.allele_depths)
        for g in genotype_calls(message.genotypes)
    )
    return (
        message.correlation_id,
        message.job_id,
        message.tenant_id,
        message.chromosome,
        message.position,
        message.reference,
        message.alternate,
        message.alt_index,
        tuple(message.all_alternates),
        message.has_quality,
        message.quality,
        tuple(message.filters),
        info,
        genotypes,
    )


def plain(fields: Sequence[Any]) -> str:
    items = list(fields)
    items[12] = sorted(items[12].items())
    return repr(items)


def assert_reads_as_upb(payload: bytes) -> list[variant_pb2.VariantMessage]:
    messages = list(variant_pb2.VariantBatch.FromString(payload).variants)
    read = read_variants(payload)
    if _LOCAL_WIRE is None:
        assert read is None  # the twin reads every payload through protobuf
    else:
        assert read is not None
        assert [plain(fields) for fields in read] == [plain(expected(m)) for m in messages]
    assert [plain(variant_fields(m)) for m in messages] == [plain(expected(m)) for m in messages]
    return messages


# --- answers against the protobuf path ----------------------------------------------------------


def oracle_answer(
    message: variant_pb2.VariantMessage, genes: GeneIndex | None, context: AnnotationContext | None = None
) -> bytes:
    return LocalAnnotator(context, genes).annotate(message).SerializeToString()


def assert_same_answers(
    payload: bytes, genes: GeneIndex | None, context: AnnotationContext | None = None
) -> int:
    messages = assert_reads_as_upb(payload)
    read = read_variants(payload) or [variant_fields(m) for m in messages]
    annotator = LocalAnnotator(context, genes)
    for fields, message in zip(read, messages, strict=True):
        # Byte for byte: the answer is written in upb's field order.
        assert annotator.answer(fields) == oracle_answer(message, genes, context)
    return len(messages)


def assert_provider_answers(payload: bytes, genes_file: Path | None) -> None:
    """The provider's answers (latency aside) from the compiled path and from protobuf alike."""
    request = analysis_requests(
        variant_pb2.VariantBatch.FromString(payload), "local", PROVIDERS, provider_deadline(10)
    )
    provider = LocalProvider(genes_file)
    genes = provider.gene_index
    for answers in (provider._answers(request, payload), provider._answers(request, None)):
        assert len(answers) == len(request.variant_batch.variants)
        for answer, message in zip(answers, request.variant_batch.variants, strict=True):
            result = analysis_pb2.AnalysisResult.FromString(answer)
            assert result.latency_ms > 0
            result.ClearField("latency_ms")
            want = LocalAnnotator(gene_index=genes).annotate(message)
            want.requested_providers.extend(PROVIDERS)
            # Sorted map keys: a map's entries otherwise serialize in its hash table's order.
            assert result.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)


@pytest.fixture(scope="module")
def genes() -> GeneIndex:
    index = GeneIndex.from_file(GENES_FILE)
    assert isinstance(index, GeneIndex)
    return index


@pytest.mark.parametrize("path", real_files(), ids=lambda path: path.name)
def test_real_files_read_and_answer_as_protobuf(path: Path, genes: GeneIndex) -> None:
    batches = batches_from_vcf(path)
    for payload in batches:
        assert_same_answers(payload, genes)
        assert_same_answers(payload, None)
    if batches:
        assert_provider_answers(batches[0], GENES_FILE)


@needs_compiled
def test_the_1000_genomes_extract_is_read_whole() -> None:
    batches = batches_from_vcf(VCF_DATA / "1kg.vcf.gz")
    assert sum(assert_same_answers(payload, None) for payload in batches) >= 381
    assert (
        max(len(variant.genotypes) for payload in batches for variant in read_variants(payload) or ()) == 629
    )


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_files_read_and_answer_as_protobuf(seed: int, tmp_path: Path, genes: GeneIndex) -> None:
    spec = SyntheticVcfSpec(records=300, samples=3, seed=seed, multi_allelic_fraction=0.3, indel_fraction=0.3)
    path = tmp_path / "synthetic.vcf"
    write_synthetic_vcf(path, spec)
    batches = batches_from_vcf(path)
    assert sum(assert_same_answers(payload, genes) for payload in batches) >= 300
    assert_provider_answers(batches[0], GENES_FILE)


@pytest.mark.parametrize("seed", range(8))
def test_random_variants_read_and_answer_as_protobuf(seed: int, genes: GeneIndex) -> None:
    messages = random_variants(seed, 150)
    for start in range(0, len(messages), 50):
        payload = serialized(messages[start : start + 50])
        assert_same_answers(payload, genes)
        assert_same_answers(payload, None, _CONTEXT)
    assert_provider_answers(serialized(messages[:20]), GENES_FILE)


def test_random_variants_cover_what_they_are_for(genes: GeneIndex) -> None:
    results = [
        analysis_pb2.AnalysisResult.FromString(oracle_answer(m, genes, _CONTEXT))
        for seed in range(8)
        for m in random_variants(seed, 150)
    ]
    answers = [result.annotation for result in results]
    assert {a.variant_class for a in answers} >= {
        "snv",
        "symbolic",
        "breakend",
        "spanning_deletion",
        "insertion",
    }
    assert {s.zygosity for a in answers for s in a.samples} >= {
        "no_call",
        "het",
        "hom_alt",
        "hemizygous",
        "het_alt",
    }
    assert any(a.overlapping_genes for a in answers) and any(a.consequence for a in answers)
    assert {a.frequency_tier for a in answers} >= {"common", "rare", "ultra_rare", "absent"}
    assert {r.classification for r in results} >= {"benign", "uncertain_significance", "not_classified"}
    assert any(c.code == "PVS1" for a in answers for c in a.acmg_criteria)
    assert any(a.clinvar_significance for a in answers) and any(a.sv_type for a in answers)


async def test_the_worker_publishes_what_the_protobuf_path_answered(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bus_url="memory://compiled-answers")
    messages = random_variants(99, 40)
    request = analysis_requests(
        variant_pb2.VariantBatch(variants=messages), "local", PROVIDERS, provider_deadline(10)
    )
    published = await published_answers(settings, request)
    batch = decode_serialized(published.value, published.headers, analysis_pb2.AnalysisResultBatch)[0]
    assert len(batch.results) == len(messages)
    for result, message in zip(batch.results, messages, strict=True):
        result.ClearField("latency_ms")
        want = LocalAnnotator().annotate(message)
        want.requested_providers.extend(PROVIDERS)
        want.variant.CopyFrom(message)
        # Results carry the variant without its INFO (schema.carried_variant).
        want.variant.ClearField("info")
        assert result == want


# --- encode_answer at its edges -----------------------------------------------------------------


def _answer_args(**changes: Any) -> list[Any]:
    values: dict[str, Any] = {
        "correlation_id": "c",
        "job_id": "",
        "tenant_id": "ü",
        "fixed": b"\x22\x05local",
        "classification": "",
        "confidence": -0.0,
        "criteria": ["", "x"],
        "rationale": "r" * 20000,
        "variant_class": "snv",
        "substitution": "",
        "multi_allelic": False,
        "allele_count": 2**31 - 1,
        "quality_tier": "",
        "frequency_tier": "rare",
        "population_af": 0.0,
        "consequence": "",
        "impact": "HIGH",
        "gene": "",
        "hgvs_c": "",
        "hgvs_p": "p.=",
        "clinvar_significance": "",
        "overlapping_genes": ("", "G"),
        "priority_tier": "P1",
        "priority_reasons": [],
        "samples": [("", "", 0.0, ""), ("S", "het", -0.0, "high"), ("T", "het", float("inf"), "low")],
        "sv_type": "DEL",
        "acmg_criteria": [
            ("BA1", "stand_alone", True, "0.3", "CSQ:MAX_AF", "r"),
            ("", "", False, "", "", ""),
        ],
        "population_af_source": "CSQ:MAX_AF",
        "clinvar_review_status": "",
        "clinvar_conflicts": "Pathogenic(1)",
        "clinvar_source": "INFO:CLNSIG",
        "transcript": "ENST1",
        "biotype": "",
        "transcript_choice": "PICK",
    }
    values.update(changes)
    return list(values.values())


@needs_compiled
def test_encode_answer_writes_what_upb_serializes_at_the_edges() -> None:
    assert _LOCAL_WIRE is not None
    encode_answer = _LOCAL_WIRE.encode_answer
    args = _answer_args()
    want = analysis_pb2.AnalysisResult(
        correlation_id="c",
        tenant_id="ü",
        provider="local",
        confidence=-0.0,
        criteria=["", "x"],
        rationale="r" * 20000,
    )
    annotation = want.annotation
    annotation.variant_class, annotation.allele_count, annotation.frequency_tier = "snv", 2**31 - 1, "rare"
    annotation.impact, annotation.hgvs_p, annotation.priority_tier, annotation.sv_type = (
        "HIGH",
        "p.=",
        "P1",
        "DEL",
    )
    annotation.overlapping_genes.extend(("", "G"))
    annotation.samples.add()
    annotation.samples.add(sample="S", zygosity="het", allele_balance=-0.0, call_quality="high")
    annotation.samples.add(sample="T", zygosity="het", allele_balance=float("inf"), call_quality="low")
    annotation.acmg_criteria.add(
        code="BA1", strength="stand_alone", met=True, value="0.3", source="CSQ:MAX_AF", rule="r"
    )
    annotation.acmg_criteria.add()
    annotation.population_af_source, annotation.clinvar_conflicts = "CSQ:MAX_AF", "Pathogenic(1)"
    annotation.clinvar_source, annotation.transcript, annotation.transcript_choice = (
        "INFO:CLNSIG",
        "ENST1",
        "PICK",
    )
    assert encode_answer(*args) == want.SerializeToString()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"rationale": b"bytes"}, TypeError),
        ({"rationale": "\ud800"}, UnicodeEncodeError),
        ({"criteria": None}, TypeError),
        ({"criteria": [1]}, TypeError),
        ({"confidence": "x"}, TypeError),
        ({"allele_count": -1}, ValueError),
        ({"allele_count": 2**31}, ValueError),
        ({"allele_count": 2**70}, OverflowError),
        ({"fixed": "str"}, TypeError),
        ({"samples": [("S", "het", 0.5)]}, TypeError),
        ({"samples": [["S", "het", 0.5, "high"]]}, TypeError),
        ({"samples": [("S", "het", None, "high")]}, TypeError),
        ({"acmg_criteria": [("BA1", "stand_alone", True)]}, TypeError),
        ({"acmg_criteria": None}, TypeError),
    ],
)
@needs_compiled
def test_encode_answer_refuses_what_is_not_an_answer(changes: dict[str, Any], error: type[Exception]) -> None:
    assert _LOCAL_WIRE is not None
    encode_answer = _LOCAL_WIRE.encode_answer
    with pytest.raises(error):
        encode_answer(*_answer_args(**changes))
    with pytest.raises(TypeError):
        encode_answer(*_answer_args()[:-1])


# --- the wire format ---------------------------------------------------------------------------


def _field(number: int, wire: int, body: bytes) -> bytes:
    return _varint(number << 3 | wire) + (_varint(len(body)) + body if wire == 2 else body)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _batch_of(variant: bytes) -> bytes:
    return _field(1, 2, variant)


_PLAIN = variant_pb2.VariantMessage(
    correlation_id="c", alternate="T", reference="C", all_alternates=["T"]
).SerializeToString()
# Two samples: S1 0|2 DP 30 AD 10,20; S2 haploid `.`, no DP, GQ 99, no AD (zigzag: -1 is 1, n is 2n).
_COLUMNS = (
    _field(1, 2, b"S1")
    + _field(1, 2, "S2-ü".encode())
    + _field(2, 2, b"\x02\x01")
    + _field(3, 2, b"\x00\x04\x01")
    + _field(4, 2, b"\x01")
    + _field(5, 2, b"\x3c\x01")
    + _field(6, 2, b"\x01\xc6\x01")
    + _field(7, 2, b"\x02\x00")
    + _field(8, 2, b"\x14\x28")
)
_INFO_AF = _field(1, 2, b"AF") + _field(2, 2, _field(3, 2, _field(1, 2, b"\x00" * 8)))

# Payloads upb reads and the reader must read the same way.
READ_ALIKE = {
    "empty batch": b"",
    "empty variant": _batch_of(b""),
    "unknown fields of every wire type": _batch_of(
        _PLAIN
        + _field(99, 0, b"\x96\x01")
        + _field(98, 1, b"\x00" * 8)
        + _field(97, 2, b"xx")
        + _field(96, 5, b"abcd")
    )
    + _field(50, 2, b"\xff"),
    "a string field twice keeps the last": _batch_of(_field(1, 2, b"first") + _PLAIN + _field(1, 2, b"last")),
    "every genotype column": _batch_of(_PLAIN + _field(21, 2, _COLUMNS)),
    "genotype columns of samples only": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(1, 2, b""))
    ),
    "empty genotype columns": _batch_of(_PLAIN + _field(21, 2, b"")),
    "an unknown field in genotype columns": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(9, 0, b"\x01"))
    ),
    "negative int32 as ten bytes": _batch_of(_PLAIN + _field(12, 0, _varint((1 << 64) - 1))),
    "an info key twice keeps the last": _batch_of(_PLAIN + _field(17, 2, _INFO_AF) + _field(17, 2, _INFO_AF)),
    "a map entry without value": _batch_of(_PLAIN + _field(17, 2, _field(1, 2, b"DB"))),
    "a map entry without key": _batch_of(_PLAIN + _field(17, 2, _field(2, 2, b""))),
    "unpacked doubles": _batch_of(
        _PLAIN + _field(17, 2, _field(1, 2, b"X") + _field(2, 2, _field(3, 2, _field(1, 1, b"\x00" * 8))))
    ),
    "batch providers and priority": _field(2, 2, "é".encode()) + _field(3, 0, b"\x07") + _batch_of(_PLAIN),
}

# Payloads the reader leaves to protobuf: upb rejects them, or protobuf's merge rules apply.
LEFT_TO_PROTOBUF = {
    "truncated length": _batch_of(_PLAIN)[:-1],
    "length past the end": b"\x0a\x7f" + _PLAIN,
    "eleven-byte varint": _batch_of(_PLAIN + b"\x40" + b"\xff" * 10 + b"\x01"),
    "six-byte tag": _batch_of(b"\x80\x80\x80\x80\x80\x01\x00"),
    "field number 0": _batch_of(b"\x00\x00"),
    "group wire type": _batch_of(_PLAIN + b"\xa3\x06\xa4\x06"),
    "wire type 7": _batch_of(_PLAIN + b"\x0f"),
    "invalid UTF-8 in a returned string": _batch_of(_field(1, 2, b"\xc3\x28")),
    "invalid UTF-8 in file_id": _batch_of(_PLAIN + _field(3, 2, b"\xed\xa0\x80")),
    "invalid UTF-8 in source_name": _batch_of(_PLAIN + _field(20, 2, b"\xf5\x80\x80\x80")),
    "invalid UTF-8 in an info key": _batch_of(_PLAIN + _field(17, 2, _field(1, 2, b"\xc0\xaf"))),
    "invalid UTF-8 in an info string": _batch_of(
        _PLAIN + _field(17, 2, _field(1, 2, b"K") + _field(2, 2, _field(4, 2, _field(1, 2, b"\xe2\x82"))))
    ),
    "invalid UTF-8 in a sample": _batch_of(_PLAIN + _field(21, 2, _field(1, 2, b"\x80"))),
    "invalid UTF-8 in batch providers": _field(2, 2, b"\xff") + _batch_of(_PLAIN),
    "packed doubles of 7 bytes": _batch_of(
        _PLAIN + _field(17, 2, _field(1, 2, b"X") + _field(2, 2, _field(3, 2, _field(1, 2, b"\x00" * 7))))
    ),
    "packed varint cut short": _batch_of(_PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(2, 2, b"\x80"))),
    # protobuf's merge rules: a column in two pieces, columns twice, a column not packed.
    "a genotype column twice": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(5, 2, b"") + _field(5, 2, b"\x02"))
    ),
    "genotype columns twice": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S")) + _field(21, 2, _field(1, 2, b"T"))
    ),
    "a genotype column not packed": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(5, 0, b"\x02"))
    ),
    # Columns upb reads but that disagree: vcf_agent.schema.genotype_calls refuses them.
    "a depth per sample and one more": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(5, 2, b"\x02\x02"))
    ),
    "fewer alleles than the ploidy says": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(2, 2, b"\x02") + _field(3, 2, b"\x02"))
    ),
    "more allele depths than counted": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(7, 2, b"\x01") + _field(8, 2, b"\x02\x02"))
    ),
    "a phased bitmap of two bytes for one sample": _batch_of(
        _PLAIN + _field(21, 2, _field(1, 2, b"S") + _field(4, 2, b"\x01\x00"))
    ),
    "two kinds in one InfoValue": _batch_of(
        _PLAIN + _field(17, 2, _field(1, 2, b"X") + _field(2, 2, _field(1, 0, b"\x01") + _field(2, 2, b"")))
    ),
    "a map entry value twice": _batch_of(
        _PLAIN + _field(17, 2, _field(1, 2, b"X") + _field(2, 2, b"") + _field(2, 2, b""))
    ),
    "a known field with another wire type": _batch_of(_PLAIN + _field(8, 5, b"abcd")),
    # upb files the whole entry among the variant's unknown fields.
    "an unknown field in a map entry": _batch_of(
        _PLAIN + _field(17, 2, _field(1, 2, b"K") + _field(3, 0, b"\x01"))
    ),
    "a timestamp with a string": _batch_of(_PLAIN + _field(19, 2, _field(1, 2, b"x"))),
    "a truncated timestamp": _batch_of(_PLAIN + _field(19, 2, b"\x08")),
    "length over 2 GiB": _batch_of(_PLAIN + b"\x4a\x80\x80\x80\x80\x08"),
}


@needs_compiled
@pytest.mark.parametrize("payload", READ_ALIKE.values(), ids=READ_ALIKE.keys())
def test_the_reader_reads_plain_shapes_as_upb(payload: bytes) -> None:
    assert_reads_as_upb(payload)


@needs_compiled
@pytest.mark.parametrize("payload", LEFT_TO_PROTOBUF.values(), ids=LEFT_TO_PROTOBUF.keys())
def test_the_reader_leaves_the_rest_to_protobuf(payload: bytes) -> None:
    assert read_variants(payload) is None
    assert read_variants(bytearray(payload)) is None


def _request_without_variants() -> analysis_pb2.AnalysisRequestBatch:
    """The request batch's other fields, as the router's worker hands them over with the bytes."""
    return analysis_requests(variant_pb2.VariantBatch(), "local", PROVIDERS, provider_deadline(10))


def _with_calls(seed: int) -> list[variant_pb2.VariantMessage]:
    """Random variants with at least one sample's call: the seed picks how many samples a batch has."""
    for attempt in range(seed * 100, seed * 100 + 100):
        messages = [m for m in random_variants(attempt, 40) if m.HasField("genotypes")]
        if messages:
            return messages
    raise AssertionError("no random batch with calls")


@needs_compiled
@pytest.mark.parametrize("seed", range(5))
def test_the_reader_keeps_each_variants_calls_as_wire_bytes_read_as_the_tuple_when_used(seed: int) -> None:
    assert _LOCAL_WIRE is not None
    messages = _with_calls(seed)
    payload = bytearray(serialized(messages))
    read = read_variants(payload)
    assert read is not None
    # The calls hold a copy of their message: the payload's buffer may change or go.
    payload[:] = bytes(len(payload))
    for fields, message in zip(read, messages, strict=True):
        calls, want = fields.genotypes, expected(message)[13]
        assert isinstance(calls, _LOCAL_WIRE.GenotypeCalls)
        assert len(calls) == len(want) > 0
        assert calls == want and want == calls  # both directions: the tuple asks the calls back
        assert calls != want[1:] and calls != (*want, want[0])
        assert (calls[0], calls[-1], calls[1:], tuple(calls), list(calls)) == (
            want[0],
            want[-1],
            want[1:],
            want,
            list(want),
        )
        assert hash(calls) == hash(want) and repr(calls) == repr(want)
        with pytest.raises(IndexError):
            calls[len(want)]
    no_calls = variant_pb2.VariantMessage(correlation_id="c", all_alternates=["A"], alternate="A")
    (fields,) = read_variants(serialized([no_calls])) or ()
    assert fields.genotypes == ()


def test_a_payload_left_to_protobuf_gets_the_same_answers() -> None:
    message = random_variants(5, 1)[0]
    # A known field with another wire type: upb keeps it as an unknown field, the reader leaves it.
    payload = _batch_of(message.SerializeToString() + _field(8, 5, b"abcd"))
    (answer,) = LocalProvider()._answers(_request_without_variants(), payload)
    result = analysis_pb2.AnalysisResult.FromString(answer)
    result.ClearField("latency_ms")
    want = LocalAnnotator().annotate(message)
    want.requested_providers.extend(PROVIDERS)
    assert result == want


def test_the_variants_are_read_from_the_bytes_and_a_corrupt_payload_raises_decode_error() -> None:
    messages = random_variants(7, 3)
    bad_utf8 = LEFT_TO_PROTOBUF["invalid UTF-8 in a sample"]
    provider = LocalProvider()
    answers = provider._answers(_request_without_variants(), serialized(messages))
    assert len(answers) == len(messages)
    with pytest.raises(DecodeError):
        provider._answers(_request_without_variants(), bad_utf8)


def test_genotype_columns_that_disagree_are_as_corrupt_as_what_upb_rejects() -> None:
    # The router dead-letters a DecodeError from the provider's reader as a corrupt payload.
    bad = LEFT_TO_PROTOBUF["a depth per sample and one more"]
    assert variant_pb2.VariantBatch.FromString(bad).variants  # upb reads it
    with pytest.raises(DecodeError, match=r"GenotypeColumns\.depth has 2 entries for 1 samples"):
        LocalProvider()._answers(_request_without_variants(), bad)


def test_a_batch_without_requested_providers_is_answered_listing_none() -> None:
    messages = random_variants(6, 3)
    payload = serialized(messages)
    request = analysis_pb2.AnalysisRequestBatch(
        provider="local", variant_batch=variant_pb2.VariantBatch.FromString(payload)
    )
    for answers in (LocalProvider()._answers(request, payload), LocalProvider()._answers(request, None)):
        for answer, message in zip(answers, messages, strict=True):
            result = analysis_pb2.AnalysisResult.FromString(answer)
            result.ClearField("latency_ms")
            assert result == LocalAnnotator().annotate(message)


def mutations(payload: bytes, rng: random.Random) -> Iterator[bytes]:
    for _ in range(400):
        data = bytearray(payload)
        for _ in range(rng.choice((1, 1, 2, 4))):
            if not data:
                break
            at = rng.randrange(len(data))
            kind = rng.randrange(6)
            if kind == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                data[at] = rng.choice((0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12))
            elif kind == 2:
                data.insert(at, rng.randrange(256))
            elif kind == 3:
                del data[at]
            elif kind == 4:
                data[at:] = data[at:][: rng.randrange(len(data) - at + 1)]
            else:
                data[at:at] = data[at : at + rng.randint(1, 12)]
        yield bytes(data)


@needs_compiled
@pytest.mark.parametrize("seed", range(6))
def test_mutated_payloads_are_read_as_upb_reads_them_or_left_to_it(seed: int) -> None:
    rng = random.Random(seed)
    read = rejected_alike = 0
    for payload in (
        serialized(random_variants(seed, 3)),
        *batches_from_vcf(VCF_DATA / "mixed-filtering.vcf")[:1],
    ):
        for mutated in mutations(payload, rng):
            try:
                messages = list(variant_pb2.VariantBatch.FromString(mutated).variants)
            except DecodeError:
                messages = None
            fields = read_variants(mutated)
            if fields is None:
                rejected_alike += messages is None
                continue
            assert messages is not None, mutated
            assert [plain(f) for f in fields] == [plain(expected(m)) for m in messages]
            read += 1
    # Both outcomes are exercised, not only one.
    assert read > 40 and rejected_alike > 200, (read, rejected_alike)
