"""Where the LanceDB tables are: a local directory or S3-compatible object storage, and its pairing.

On S3 Lance commits a table version with a conditional put (If-None-Match: *), so a store server
must honour that header; two writers' commits then never overwrite each other, but the writer's
exactly-once rule needs more than that: it appends the rows of variants its graph has not seen
(skipping merge_insert's key join), so a LanceDB store must only ever be written by the writer
whose graph holds what the store holds. The graph is a local file engine that one process opens
for writing, so "one writer per store" is "one data directory per store": the first writer to open
an object store (or a store outside its data directory) pairs them, writing the same random id into
`store-pairing` in its data directory and into a one-row `store_pairing` table in the store (the
row of that table's version 1, which one conditional put commits, decides, so of two writers
racing to pair one wins). Afterwards a writer whose data directory holds another id, or none, is
refused at start, in one line, and so is a store that holds tables but no pairing. A data
directory whose store was emptied pairs with it again: nothing there can be stored twice.
"""

from __future__ import annotations

import contextlib
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa

from vcf_agent.config import ConfigError, StoreSettings
from vcf_agent.schema import STORE_KEY_VERSION

PAIRING_TABLE = "store_pairing"
PAIRING_FILE = "store-pairing"
_PAIRING_SCHEMA = pa.schema(
    [
        pa.field("writer_id", pa.string(), nullable=False),
        pa.field("key_version", pa.int32(), nullable=False),
        # Where the paired data directory is, only to name it in a refusal.
        pa.field("data_dir", pa.string(), nullable=False),
    ]
)

# Object-store clients retry failed requests with backoff for up to 3 minutes by default; a store
# that cannot be reached then holds the writer's start-up that long with no word. Failing sooner
# names the problem; the writer's own retries (a failed batch is redelivered) cover transient ones.
# Either can be raised with store_options.
_OBJECT_STORE_DEFAULTS = {"client_max_retries": "3", "client_retry_timeout": "20", "connect_timeout": "5s"}


class StoreUnavailableError(ConfigError):
    """The LanceDB store cannot be opened (unreachable, denied, no bucket) or is not this writer's."""


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A LanceDB location: a local directory or an s3:// URL, with its storage options.

    `pairing_file`: the writer's; set, opening pairs the store with that data directory (above).
    """

    uri: str
    options: Mapping[str, str] = field(default_factory=dict, repr=False)
    pairing_file: Path | None = None

    @classmethod
    def of(cls, where: Path | StoreLocation) -> StoreLocation:
        return where if isinstance(where, StoreLocation) else cls(str(where))

    @classmethod
    def of_settings(cls, store: StoreSettings, data_dir: Path) -> StoreLocation:
        """The configured store, paired with the data directory unless it is the default one in it."""
        writer_dir = data_dir / "writer"
        if not store.url:
            return cls(str(writer_dir / "lance"))
        options = {**_OBJECT_STORE_DEFAULTS, **store.options} if store.is_object_store else {}
        return cls(store.url, options, writer_dir / PAIRING_FILE)

    @property
    def is_object_store(self) -> bool:
        return "://" in self.uri

    def connect(self, session: lancedb.Session) -> Any:
        """A LanceDB connection, checked to be reachable (and paired, for a writer)."""
        if not self.is_object_store:
            Path(self.uri).mkdir(parents=True, exist_ok=True)
        try:
            db = lancedb.connect(self.uri, session=session, storage_options=dict(self.options) or None)
            tables = set(db.list_tables().tables)
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreUnavailableError(f"LanceDB store {self.uri}: {_reason(exc, self._endpoint)}") from None
        if self.pairing_file is not None:
            self._pair(db, tables)
        return db

    def _pair(self, db: Any, tables: set[str]) -> None:
        assert self.pairing_file is not None
        local = self.pairing_file.read_text(encoding="utf-8").strip() if self.pairing_file.exists() else ""
        if PAIRING_TABLE not in tables:
            if tables:
                self._refuse(
                    f"it holds tables ({', '.join(sorted(tables))}) but no writer pairing: use an empty"
                    " prefix"
                )
            if not local:
                # The data directory's side first: a crash between the two writes leaves an id
                # here and an empty store, which the next start pairs with that same id.
                local = uuid.uuid4().hex
                self.pairing_file.parent.mkdir(parents=True, exist_ok=True)
                partial = self.pairing_file.with_suffix(".partial")
                partial.write_text(local + "\n", encoding="utf-8")
                partial.replace(self.pairing_file)
            where = _where(self.pairing_file)
            row = {"writer_id": local, "key_version": STORE_KEY_VERSION, "data_dir": where}
            # A failure here is another writer's pairing commit winning the race: refused below.
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                db.create_table(PAIRING_TABLE, pa.Table.from_pylist([row], schema=_PAIRING_SCHEMA))
        try:
            # Version 1 decides: Lance's create is not exclusive (a racing create is committed as an
            # overwrite on top of the first, measured on versitygw), but each version number is
            # committed once, with a conditional put, so every writer reads the same first pairing.
            # The table is never compacted, so version 1 stays.
            pairing = db.open_table(PAIRING_TABLE)
            pairing.checkout(1)
            found = pairing.to_arrow().to_pylist()
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreUnavailableError(
                f"LanceDB store {self.uri}: cannot pair: {_reason(exc, self._endpoint)}"
            ) from None
        if len(found) != 1:
            self._refuse(f"its {PAIRING_TABLE} table holds {len(found)} rows, not one")
        paired = found[0]
        if paired["key_version"] != STORE_KEY_VERSION:
            self._refuse(
                f"it holds results stored with key scheme {paired['key_version']}; this version keys them"
                f" with scheme {STORE_KEY_VERSION}: use an empty prefix and resubmit the files"
            )
        if paired["writer_id"] != local:
            self._refuse(
                f"it is paired with the writer whose graph is in {paired['data_dir']}, not with this data"
                " directory, and only the writer whose graph matches a store may write it (or results"
                " would be stored twice): use that data directory or another store"
            )

    @property
    def _endpoint(self) -> str:
        return self.options.get("aws_endpoint") or self.options.get("endpoint") or "(AWS's)"

    def _refuse(self, why: str) -> None:
        raise StoreUnavailableError(f"LanceDB store {self.uri}: {why}")


def _where(pairing_file: Path) -> str:
    return f"{socket.gethostname()}:{pairing_file.parent.parent.resolve()}"


def _reason(exc: BaseException, endpoint: str) -> str:
    """What an object-store error says, in one line: the usual causes named, then the server's words.

    Lance's errors carry the whole request, retry state and the server's XML answer; the S3 error
    code and message (or the connection error) are what a person needs.
    """
    text = " ".join(str(exc).split())
    code = re.search(r"<Code>([^<]+)</Code>", text)
    said = re.search(r"<Message>([^<]+)</Message>", text)
    status = re.search(r"status: (\d{3})", text)
    connect = re.search(r'message: "([^"]+)"', text) or re.search(
        r'ConnectError\("([^"]+)"|(dns error[^"})]*)', text
    )
    if code is not None:
        detail = f"{code[1]}: {said[1] if said else ''}".strip(": ")
    elif connect is not None:
        detail = next(group for group in connect.groups() if group)
    else:
        return text[:400]
    if (code and code[1] in _DENIED) or (status and status[1] == "403"):
        return (
            "access denied: check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or"
            f" store_options): {detail}"
        )
    if code and code[1] == "NoSuchBucket":
        return f"no such bucket: create it first ({detail})"
    if code is None:
        where = f"{endpoint} (AWS_ENDPOINT_URL or store_options' aws_endpoint)"
        return f"cannot reach the S3 endpoint {where}: {detail}"
    return detail


_DENIED = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"})
