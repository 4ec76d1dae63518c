"""The Lance file format a store's tables are written in: 2.1 for a new store (see `_FILE_FORMAT`:
2.2 reads a column holding one value throughout, as a genome's `alt_index` and `partial` do, by
decoding its whole page), and whatever a store from before was created with, kept as it grows."""

from __future__ import annotations

import os
from pathlib import Path

import lancedb

from vcf_agent.services.writer._carrier_rows import CARRIER_SCHEMA
from vcf_agent.services.writer._lance_store import LanceStore, VariantQuery
from vcf_agent.services.writer._rows import ANALYSIS_SCHEMA, VARIANT_SCHEMA, build_rows

from ._writes import FILE_B, make_batch

TABLES = ("variants", "analyses", "carriers")


def _file_formats(table_directory: Path) -> set[tuple[int, int]]:
    """(major, minor) of every data file of a table, from each file's footer.

    A Lance file ends with its format version, two little-endian u16s, then the magic "LANC"
    (format 2.1 as (2, 1), 2.2 as (2, 2); 2.0 was written as (0, 3)).
    """
    formats = set()
    for data_file in (table_directory / "data").glob("*.lance"):
        with data_file.open("rb") as lance_file:
            lance_file.seek(-8, os.SEEK_END)
            tail = lance_file.read()
        assert tail[4:] == b"LANC", f"{data_file} is not a Lance file"
        formats.add((int.from_bytes(tail[0:2], "little"), int.from_bytes(tail[2:4], "little")))
    return formats


def test_a_new_stores_tables_are_written_in_lance_format_2_1_and_compaction_keeps_it(
    lance: LanceStore, tmp_path: Path
) -> None:
    store, path = lance, tmp_path / "lance"  # where the writer tests' `lance` fixture keeps it
    # `alt_index` 0 and `partial` false in every row, as in a genome.
    store.write(make_batch(range(200)))
    store.write(make_batch(range(200), file_id=FILE_B))
    for table in TABLES:
        assert _file_formats(path / f"{table}.lance") == {(2, 1)}, table
    store.compact()
    for table in TABLES:
        assert _file_formats(path / f"{table}.lance") == {(2, 1)}, table
    page, total = store.query(VariantQuery(limit=100, offset=150))
    assert total == 400
    assert [(v.file_id == FILE_B, v.record_index) for v in page] == [
        *((False, record) for record in range(150, 200)),
        *((True, record) for record in range(50)),
    ]


def test_a_store_created_in_lancedbs_default_format_keeps_it_and_answers_as_before(tmp_path: Path) -> None:
    path = tmp_path / "lance"
    db = lancedb.connect(str(path))
    old = build_rows(make_batch(range(150)))
    db.create_table("variants", old.variants, schema=VARIANT_SCHEMA)
    db.create_table("analyses", old.analyses, schema=ANALYSIS_SCHEMA)
    db.create_table("carriers", schema=CARRIER_SCHEMA)
    default = _file_formats(path / "variants.lance")
    assert len(default) == 1 and default != {(2, 1)}, f"lancedb's default is {default}: revisit _FILE_FORMAT"
    store = LanceStore(path)
    store.open()
    try:
        store.write(make_batch(range(150, 300)))
        store.compact()
        page, total = store.query(VariantQuery(limit=100, offset=100))
        assert total == 300 and [v.record_index for v in page] == list(range(100, 200))
    finally:
        store.close()
    # The carriers table held no rows before: its first files too are in the format it was created in.
    for table in TABLES:
        assert _file_formats(path / f"{table}.lance") == default, table
