"""The compiled record encoder against the pure-Python reference encoder, byte for byte.

The Python path of VcfReader (every rule, every cache fill) is the reference, and with the
encoder's pure-Python twin (which leaves every line to it) the whole reader.
These tests read the same files twice, once with the compiled fast path and once
with it turned off, and require identical batches, dead letters, warnings and
counts, on real caller output and on files built to hit every branch of the C
code (repeated records, so the caches are warm and the fast path really runs).
They skip when the extension was not built or VCF_AGENT_NO_EXTENSIONS=1.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import vcf  # pyvcf3: only its bundled test files are used

from vcf_agent.compiled import compiled_module
from vcf_agent.schema import correlation_prefix, genotype_calls
from vcf_agent.services.ingest._vcf_reader import VcfFileError, VcfReader
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf
from vcf_agent.v1 import variant_pb2

from ._vcf_text import COLUMNS, HEADER, record, write_vcf
from .test_genotype_columns import SAMPLE_COLUMNS, SHAPES

_COMPILED = compiled_module("vcf_agent.services.ingest._record_encoder")
if _COMPILED is None:
    pytest.skip(
        "the compiled record encoder is not built or VCF_AGENT_NO_EXTENSIONS=1", allow_module_level=True
    )
RecordEncoder = _COMPILED.RecordEncoder

PYVCF_DATA = Path(vcf.__file__).parent / "test"
_SUFFIX = b"\x9a\x01\x02\x08\x01"


class _PythonOnly:
    """Stands in for the RecordEncoder with its fast path off; state goes to the real one."""

    def __init__(self, encoder: object) -> None:
        object.__setattr__(self, "_encoder", encoder)

    def encode(self, line: str) -> None:
        return None

    def __getattr__(self, name: str) -> object:
        return getattr(object.__getattribute__(self, "_encoder"), name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(object.__getattribute__(self, "_encoder"), name, value)


def _read(path: Path, *, fast: bool) -> tuple[list[tuple[bytes, int, int, int, str, int]], dict[str, object]]:
    try:
        # Batches close on size only: a linger deadline would cut them by timing, not content.
        reader = VcfReader(
            path,
            file_id="f" * 64,
            job_id="job",
            tenant_id="lab",
            source_name=path.name,
            batch_size=7,
            linger_ms=3_600_000,
        )
    except VcfFileError as exc:
        # A file refused as a whole (some pyvcf3 files) must be refused the same way.
        return [], {
            "letters": [(exc.code, str(exc))],
            "warnings": [],
            "file_issues": [],
            "counters": None,
            "slow_calls": 0,
        }
    slow_calls = 0
    encode_slow = reader._encode_slow

    def counted(line: str) -> list[bytes] | None:
        nonlocal slow_calls
        slow_calls += 1
        return encode_slow(line)

    reader._encode_slow = counted  # type: ignore[method-assign]
    if not fast:
        reader._encoder = _PythonOnly(reader._encoder)  # type: ignore[assignment]
    with reader:
        batches = [
            (b.payload, b.variant_count, b.first_record_index, b.last_record_index, b.chromosome, b.position)
            for b in reader.batches()
        ]
    letters = [(d.line_number, d.error_code, d.raw_line, d.reason) for d in reader.take_dead_letters()]
    outcome = {
        "letters": letters,
        "warnings": reader.warnings,
        "file_issues": reader.file_issues,
        "counters": reader.counters,
        "slow_calls": slow_calls,
    }
    return batches, outcome


def _assert_same(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Both paths agree on `path`; returns (records, records the Python path handled with C on)."""
    # The batch timestamp is the only thing allowed to differ between two reads.
    monkeypatch.setattr(VcfReader, "_batch_suffix", lambda self: _SUFFIX)
    fast_batches, fast = _read(path, fast=True)
    slow_batches, slow = _read(path, fast=False)
    assert fast_batches == slow_batches
    for key in ("letters", "warnings", "file_issues", "counters"):
        assert fast[key] == slow[key], key
    records = slow["counters"].records if slow["counters"] else 0  # type: ignore[attr-defined]
    return records, fast["slow_calls"]  # type: ignore[return-value]


def _repeat(lines: list[str], times: int) -> list[str]:
    """The records again and again at increasing positions, so later copies hit warm caches."""
    out = []
    for copy in range(times):
        for i, line in enumerate(lines):
            columns = line.split("\t")
            columns[1] = str(1000 + copy * 100 + i)
            out.append("\t".join(columns))
    return out


def test_the_fast_path_hashes_correlation_ids_with_hashlib(tmp_path: Path) -> None:
    multi_allelic = record(alt="G,T", info="DP=10", format="GT:DP", s1="1/2:5", s2="0/1:3")
    path = write_vcf(tmp_path / "ids.vcf", _repeat([record(), multi_allelic], 20))
    batches, outcome = _read(path, fast=True)
    assert outcome["slow_calls"] < 40, "the fast path did not run"
    prefix = correlation_prefix("lab", "f" * 64)
    variants = [v for batch in batches for v in variant_pb2.VariantBatch.FromString(batch[0]).variants]
    assert len(variants) == 60
    for variant in variants:
        key = prefix + f"{variant.record_index}:{variant.alt_index}".encode()
        assert variant.correlation_id == hashlib.blake2b(key, digest_size=16).hexdigest()


def test_synthetic_multi_sample_file_is_mostly_encoded_by_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SyntheticVcfSpec(records=4000, samples=4, multi_allelic_fraction=0.3, indel_fraction=0.2, seed=3)
    path = write_synthetic_vcf(tmp_path / "synthetic.vcf.gz", spec, bgzip=True)
    records, slow_calls = _assert_same(path, monkeypatch)
    assert records == 4000
    # Only first sightings of REF/ALT strings (many here: random indels) and the like need Python.
    assert slow_calls < records * 0.25, slow_calls


EDGE_RECORDS = [
    record(),
    record(alt="G,T", info="DP=10;AF=0.5,0.25;AD2=1,2,3", s1="1/2:7:60:1,3,3:0,1,2,3,4,5", s2="0|0:.:.:.:."),
    record(qual="1e3"),
    record(qual=".5"),
    record(qual="-1.5"),
    record(qual="5."),
    record(qual="007"),
    record(qual="."),
    record(qual="NaN"),
    record(qual="+3e2"),
    record(qual="1e"),
    record(qual="1.2.3"),
    record(id="."),
    record(id="rs9;rs10"),
    record(id="rs 9"),
    record(id="rs9;rs9"),
    record(id="rs9;"),
    record(filter="0"),
    record(filter="LowQual;LowQual"),
    record(filter="LowQual;."),
    record(info="DP=10;DP=12"),
    record(info="DP=10;AF=0.5;"),
    record(info="DP=10;1X=2"),
    record(info="GENE=A,B"),
    record(format=".", s1=".", s2="."),
    record(format=".", s1="0/1", s2="."),
    record(format="GT:1X", s1="0/1:a", s2="0/0:b"),
    record() + "\t",
    record() + "\t\t",
    record(filter="LowQual"),
    record(filter="Undeclared"),
    record(info="."),
    record(info="DP=10;DB;GENE=BRCA%3B1;CH=x"),
    record(info="DP=2147483648"),
    record(info="DP=-2147483640;AF=1e-5"),
    record(info="DP=-2147483641"),
    record(info="DP=+12;AF=.5"),
    record(info="DP=12;AF=5."),
    record(info="DP=12;AF=inf"),
    record(info="DP=12;AF=1.5E+3"),
    record(info="DP=12;AF=1e"),
    record(info="DP=12;AF=."),
    record(info="DP=.;AF=0.1"),
    record(info="DP=;AF=0.1"),
    record(info="DP=1,2"),
    record(info="DP=12;AF=0.1,0.2"),
    record(alt="G,T", info="AF=0.1,.;AD2=.,.,."),
    record(alt="G,T", info="AF=.,.;AD2=1,2"),
    record(alt="G,T", info="AD2=."),
    record(info="DP"),
    record(s1="0/1:-5:+7:.,.:0,10,100"),
    record(s1="0/1:2147483647:-2147483640:3,4:0,10,100"),
    record(s1="0/1:2147483648:1:3,4:0,10,100"),
    record(s1="0/1:-2147483641:1:3,4:0,10,100"),
    record(s1="0/1:1,2:1:3,4:0,10,100"),
    record(s1="0/1:1:1:3,4,5:0,10,100"),
    record(s1="0/1:1:1:3:0,10,100"),
    record(s1="0/1:x:1:3,4:0,10,100"),
    record(s1="0/1::1:3,4:0,10,100"),
    record(s1="1:5:20:0,5:0,9"),
    record(s1="0/1/1:5:20:0,5:0,1,2,3"),
    record(s1="./.:.:.:.:."),
    record(s1="."),
    record(s1="0/1:5"),
    record(s1="0/1:5:20:1,1:0,1,2:extra"),
    record(s1="|0|1:5:20:1,1:0,1,2"),
    record(s1="0/3:5:20:1,1:0,1,2"),
    record(format="GT:AD", s1="0/1:3,4", s2="0/0:5,0"),
    record(format="DP:GT", s1="3:0/1", s2="4:0/0"),
    record(format="GT:GQ:DP", s1="0/1:20:3", s2="0/0:30:4"),
    record(alt="<DEL>", info="SVTYPE=DEL"),
    record(alt="G[chr2:500["),
    record(alt="."),
    record(ref="X"),
    record(alt="A"),
]


def test_edge_records_agree_and_reach_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_vcf(tmp_path / "edges.vcf", _repeat(EDGE_RECORDS, 6))
    records, slow_calls = _assert_same(path, monkeypatch)
    assert records == len(EDGE_RECORDS) * 6
    assert slow_calls < records * 0.7, slow_calls


def test_every_genotype_column_shape_agrees_on_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GenotypeColumns (test_genotype_columns.SHAPES): phased and not, haploid, triploid, multi-allelic,
    `.` alleles, DP/GQ/AD missing in part or whole (empty columns), no GT at all."""
    header = HEADER
    lines = _repeat([shape for shape, _ in SHAPES], 5)
    path = tmp_path / "shapes.vcf"
    path.write_text(header + SAMPLE_COLUMNS + "".join(line + "\n" for line in lines), encoding="utf-8")
    records, slow_calls = _assert_same(path, monkeypatch)
    assert records == len(SHAPES) * 5
    # After the first copy the compiled encoder writes every record but the one that drops
    # trailing values (padding is the Python path's).
    assert slow_calls == len(SHAPES) + 4, slow_calls


def test_float_gq_and_free_count_ad_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Older GATK's shapes: GQ as Float (stored rounded, ties to even), AD with Number=. and GL floats."""
    header = (
        HEADER.replace("ID=GQ,Number=1,Type=Integer", "ID=GQ,Number=1,Type=Float")
        .replace("ID=AD,Number=R", "ID=AD,Number=.")
        .replace("ID=PL,Number=G,Type=Integer", "ID=PL,Number=3,Type=Float")
    )
    samples = [
        "0/1:10:19.11:5,5:-0.00,-0.60,-7.82",
        "0/1:10:20.5:5:-1,-2,-3",
        "0/1:10:21.5:5,5,5:.,.,.",
        "0/1:10:-0.4:.:1e-3,2E2,.5",
        "0/1:10:nan:5,5:0,0,0",
        "0/1:10:inf:5,5:0,0,0",
        "0/1:10:1e10:5,5:0,0,0",
        "0/1:10:2147483647.4:5,5:0,0,0",
        "0/1:10:2147483647.6:5,5:0,0,0",
        "0/1:10:.:5,5:0,0",
        "0/1:10:1.5.5:5,5:0,0,0",
    ]
    lines = _repeat([record(s1=sample) for sample in samples], 4)
    path = tmp_path / "gatk-old.vcf"
    path.write_text(header + COLUMNS + "".join(line + "\n" for line in lines), encoding="utf-8")
    records, slow_calls = _assert_same(path, monkeypatch)
    assert slow_calls < records * 0.6, slow_calls
    batches, outcome = _read(path, fast=True)
    # nan, inf, 1e10 and 2147483647.6 do not round to an int32; 1.5.5 is no number; "0,0" is 2 of 3
    # GLs: errors of the file, once per key, and every record kept with those values missing.
    assert outcome["letters"] == []
    issues = outcome["file_issues"]
    assert sorted((i.code, i.column) for i in issues) == [  # type: ignore[attr-defined]
        ("FORMAT_NUMBER", "FORMAT"),
        ("INTEGER_OUT_OF_RANGE", "FORMAT"),
    ]
    variants = [v for batch in batches for v in variant_pb2.VariantBatch.FromString(batch[0]).variants]
    assert len(variants) == len(samples) * 4
    quality = [genotype_calls(v.genotypes)[0].genotype_quality for v in variants[: len(samples)]]
    # 19.11 -> 19, 20.5 -> 20 and 21.5 -> 22 (ties to even), -0.4 -> 0, then nan, inf, 1e10 missing,
    # 2147483647.4 -> 2147483647, .6 missing, '.' missing, 1.5.5 missing (-1: no value).
    assert quality == [19, 20, 22, 0, -1, -1, -1, 2147483647, -1, -1, -1]


def test_real_1000_genomes_extract_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """629 samples of 1000 Genomes calls with Float GQ and GL (PyVCF3's extract, tests/data/vcf)."""
    path = Path(__file__).parents[1] / "data" / "vcf" / "1kg.vcf.gz"
    records, slow_calls = _assert_same(path, monkeypatch)
    assert records == 381
    assert slow_calls < records * 0.1, slow_calls


def test_contig_changes_crlf_and_a_missing_final_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _repeat([record(), record(alt="T")], 5)
    lines += [record(chrom="chr2", pos=str(10 + i)) for i in range(5)]
    lines += [record(pos="5")]  # unsorted after chr2:14
    text = HEADER + COLUMNS + "\r\n".join(lines) + "\r\n\r\n" + record(chrom="chr2", pos="99")
    path = tmp_path / "crlf.vcf"
    path.write_bytes(text.encode())
    _assert_same(path, monkeypatch)


def test_non_ascii_values_fall_back_to_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _repeat([record(info="GENE=BRCA1"), record(info="GENE=Ünïcode")], 4)
    path = write_vcf(tmp_path / "utf8.vcf", lines)
    _assert_same(path, monkeypatch)


def _random_sample(rng: random.Random, fmt: str, n_alt: int) -> str:
    values = []
    for key in fmt.split(":"):
        if rng.random() < 0.01:
            values.append(rng.choice(["", ".", "x", "-3", "2147483648", "1,2", "1,2,3,4,5,6,7", ".,."]))
        elif key == "GT":
            common = rng.random() < 0.95
            values.append(
                rng.choice(
                    ["0/1", "1|1", "0/0", "0|1", "./.", ".", "1", "0/1/2", "|0|1", "0/x"][
                        : 4 if common else 10
                    ]
                )
            )
        elif key in ("DP", "GQ"):
            values.append(str(rng.randint(-2, 500)) if rng.random() < 0.95 else ".")
        elif key == "AD":
            values.append(
                ",".join(str(rng.randint(0, 99)) if rng.random() < 0.95 else "." for _ in range(n_alt + 1))
            )
        elif key == "PL":
            values.append(",".join(str(rng.randint(0, 999)) for _ in range((n_alt + 1) * (n_alt + 2) // 2)))
        else:
            values.append(str(rng.randint(0, 300)))
    if rng.random() < 0.01:
        values = values[: rng.randint(1, len(values))]
    if rng.random() < 0.01:
        values.append("9")
    return ":".join(values)


# Valid values first: each column takes its first value 85% of the time, so most records are legal.
_RANDOM_COLUMNS = {
    "id": [".", "rs1", "rs 2", "", "a;b"],
    "ref": ["A", "C", "AT", "N", "X", "", "a"],
    "alt": [
        "G",
        "T",
        "G,T",
        "<DEL>",
        "*",
        ".",
        "A",
        "G,G",
        "G[chr2:5[",
        "<*>",
        "GT,C,A",
        "G,<*>",
        "<NON_REF>,T",
    ],
    "qual": ["50", "1e3", ".", "-1", "+2.5", "nan", "", "9" * 70, "0.000001", "1e400"],
    "filter": ["PASS", "LowQual", ".", "Bad", "PASS;LowQual", ""],
    "format": ["GT:DP:GQ:AD:PL", "GT:AD", "DP:GT", "GT", "GT:DP:GQ:AD:PL:XX", "GT:GT"],
}
_RANDOM_INFO = [
    "DP=10",
    "DP=10;AF=0.5",
    "AF=0.1,0.2",
    "DB",
    "DB=1",
    "GENE=X",
    "CH=ab",
    "AD2=1,2",
    "AD2=1,2,3",
    "DP=99999999999",
    "DP=-2147483640",
    "AF=1e-9",
    "AF=.",
    "DP=.",
    "AF=,",
    "DP=1;;AF=2",
    "XX=1",
]


def _random_info(rng: random.Random) -> str:
    if rng.random() < 0.85:
        return rng.choice([f"DP={rng.randint(0, 900)}", f"AF={rng.random():.3g}", "DB", "GENE=X"])
    return rng.choice(_RANDOM_INFO)


def _random_records(rng: random.Random, count: int) -> list[str]:
    """Mostly legal records with every kind of fault sprinkled in, half of them repeated (warm caches)."""

    def pick(column: str) -> str:
        pool = _RANDOM_COLUMNS[column]
        return pool[0] if rng.random() < 0.85 else rng.choice(pool)

    lines: list[str] = []
    pos = 100
    for _ in range(count):
        fmt, alt = pick("format"), pick("alt")
        n_alt = 0 if alt == "." else alt.count(",") + 1
        line = record(
            chrom="chr1" if rng.random() < 0.98 else rng.choice(["chrX", "", "chr1 "]),
            pos=str(pos),
            id=pick("id"),
            ref=pick("ref"),
            alt=alt,
            qual=pick("qual"),
            filter=pick("filter"),
            info=";".join(_random_info(rng) for _ in range(rng.randint(1, 3))),
            format=fmt,
            s1=_random_sample(rng, fmt, n_alt),
            s2=_random_sample(rng, fmt, n_alt),
        )
        pos += rng.choice([0, 1, 5, -1]) if rng.random() < 0.05 else rng.randint(1, 10)
        if rng.random() < 0.1:
            # Faults from ID on: a mangled POS would leave every later record unsorted.
            chars = list(line)
            start = line.index("\t", line.index("\t") + 1)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(start, len(chars))
                if rng.random() < 0.4:
                    del chars[at]
                else:
                    chars.insert(at, rng.choice("\t:;,.=01|/AÜ\r "))
            line = "".join(chars)
        lines.append(line)
        if rng.random() < 0.5:
            again = rng.choice(lines).split("\t")
            if len(again) > 1:
                again[1] = str(pos)
                pos += 1
            lines.append("\t".join(again))
    return lines


@pytest.mark.parametrize("seed", range(12))
def test_random_records_agree(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_vcf(tmp_path / "random.vcf", _random_records(random.Random(seed), 400))
    records, slow_calls = _assert_same(path, monkeypatch)
    assert records > 400
    # The fast path must take a real share (about half here; the rest are faults
    # and first sightings), or this compares Python with itself.
    assert slow_calls < records * 0.75, slow_calls


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in PYVCF_DATA.iterdir()
        if p.suffix in (".vcf", ".gz", ".bcf") and not p.name.endswith((".tbi", ".csi"))
    ),
)
def test_pyvcf3_files_agree(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_same(PYVCF_DATA / name, monkeypatch)


def test_encoder_rejects_bad_construction() -> None:
    with pytest.raises(ValueError, match="columns"):
        RecordEncoder(
            columns=10,
            numbered=True,
            prefix=b"f:",
            job_fields=b"",
            sample_fields=(),
            chrom_fields={},
            refs={},
            alts={},
            quals={},
            filters={},
            info={},
            layouts={},
            non_diploid={},
            info_natives={},
        )


def test_a_missing_value_keeps_its_place_in_a_list_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VCF 4.3 §1.4.2: Number=A is one value per ALT, Number=R one per allele, in order. `AF=.,0.3`
    is the second ALT's 0.3; a reader that dropped the `.` gave it to the first ALT (and, as a
    population frequency, a BA1 "benign" to an allele no database lists)."""
    header = HEADER.replace(
        '##INFO=<ID=GENE,Number=1,Type=String,Description="Gene">',
        '##INFO=<ID=GENE,Number=1,Type=String,Description="Gene">\n'
        '##INFO=<ID=NAMES,Number=A,Type=String,Description="Per-ALT names">',
    )
    calls = {"format": "GT:DP", "s1": "0/1:5", "s2": "1/2:3"}
    lines = _repeat(
        [
            record(alt="G,T", info="AF=.,0.3;AD2=7,.,4;NAMES=.,x", **calls),
            record(alt="G,T", info="AF=0.3,.;AD2=.,.,4", **calls),
            record(alt="G,T", info="AF=.,.;AD2=.,.,.", **calls),
        ],
        4,
    )
    path = tmp_path / "in-place.vcf"
    path.write_text(header + COLUMNS + "\n".join(lines) + "\n")
    records, slow_calls = _assert_same(path, monkeypatch)
    assert records == 12 and slow_calls < 12
    batches, outcome = _read(path, fast=True)
    assert outcome["letters"] == []
    variants = [v for batch in batches for v in variant_pb2.VariantBatch.FromString(batch[0]).variants]
    first, second, third = (variants[i : i + 2] for i in (0, 2, 4))
    for variant in first:
        af = list(variant.info["AF"].floats.values)
        assert af[0] != af[0] and af[1] == 0.3  # NaN, then the second ALT's 0.3
        assert list(variant.info["AD2"].ints.values) == [7, variant_pb2.IntList.RESERVED_MISSING, 4]
        assert list(variant.info["NAMES"].strings.values) == [".", "x"]
    for variant in second:
        af = list(variant.info["AF"].floats.values)
        assert af[0] == 0.3 and af[1] != af[1]
        assert list(variant.info["AD2"].ints.values) == [
            variant_pb2.IntList.RESERVED_MISSING,
            variant_pb2.IntList.RESERVED_MISSING,
            4,
        ]
    for variant in third:
        # Nothing present: no entry, as before.
        assert "AF" not in variant.info and "AD2" not in variant.info
