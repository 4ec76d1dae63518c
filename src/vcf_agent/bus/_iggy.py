"""Apache Iggy backend: iggy://user:pass@host:port?stream=vcf-agent&timeout_s=5.

Mapping. One Iggy stream (the URL's `stream`, default "vcf-agent") holds one
Iggy topic per bus stream, with the bus partition count; Iggy partition ids are
0-based in this server line, so bus partition n is Iggy partition n. Messages
are sent to an explicit partition, partition_for_key(key), never to Iggy's own
key hashing, so a failover to another backend keeps per-key order.

Headers travel as Iggy user headers (string key, string value). Iggy refuses
empty or >255-byte values, so "" travels as a typed Bool(false) marker and an
oversized value is a BusError. The message key rides under a Raw-typed header
key, which cannot collide with any string header name.

Consumer groups. The server assigns partitions to group members (join, then
the sync command reports this member's partitions). Records are read at
explicit offsets kept by the consumer, and the group's offset is stored only
by commit(): nothing is ever auto-committed on fetch. Iggy stores the last
processed offset while the bus contract commits the next offset to read, so
commit stores next-1 and reading adds 1 back (committing 0 deletes the offset).

The Python SDK exposes no typed call for consumer offsets or the assignment
sync, so those go through send_binary_request with the request layouts of the
server's binary protocol (core/binary_protocol in apache/iggy).

Failure. The SDK retries a lost connection forever by default and awaits
inside that loop, so clients are built with a bounded reconnection policy and
every call is bounded in time (`_within`); a client that hit an outage is
dropped and the next call connects and logs in afresh (consumers then rejoin
their groups). The server does not deduplicate message ids: after an
ambiguous send the caller may publish twice, which idempotent consumers absorb.

Connections. A client has one request in flight at a time, so a bus keeps two:
one for publishing, stream creation and health probes, and one, opened at the
first such read, for lag, offset and group reads (status and the job watchdog),
so probes and publishes never queue behind them. Each consumer has its own.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import struct
import time
import traceback
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from apache_iggy import (
    AutoLogin,
    HeaderKey,
    HeaderValue,
    IggyClient,
    IggyExpiry,
    MaxTopicSize,
    PollingStrategy,
    ReceiveMessage,
    SendMessage,
    TcpConfig,
    TcpReconnectionConfig,
)

from vcf_agent.bus._base import (
    Bus,
    BusError,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    Partitioner,
    PublishedPosition,
    Record,
    StartPosition,
    StreamSpec,
    TopicPartition,
)

_log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STREAM_NAME = "vcf-agent"
DEFAULT_TIMEOUT_S = 5.0
_HEALTH_TIMEOUT_S = 2.0
# How often a consumer re-reads its assignment, so it notices rebalances.
_SYNC_INTERVAL_S = 1.0
_IDLE_POLL_S = 0.05
_MAX_HEADER_BYTES = 255

# Command codes of the server's binary protocol (core/binary_protocol/src/codes.rs).
_GET_ME = 20
_GET_CLIENT = 21
_GET_CLIENTS = 22
_GET_CONSUMER_OFFSET = 120
_STORE_CONSUMER_OFFSET = 121
_DELETE_CONSUMER_OFFSET = 122
_SYNC_CONSUMER_GROUP = 606
_CONSUMER_GROUP_KIND = 2
_ACK_QUORUM = 1

_KEY_HEADER = HeaderKey.Raw(b"key")
_EMPTY_MARKER = HeaderValue.Bool(False)

# Substrings of the SDK's error texts that mean "server not reachable" rather than a refusal.
_UNAVAILABLE_HINTS = (
    "disconnected",
    "not connected",
    "cannot establish connection",
    "connection closed",
    "connection reset",
    "broken pipe",
    "unauthenticated",
    "stale client",
    "timeout",
)


@dataclass(frozen=True, slots=True)
class IggySettings:
    host: str
    port: int
    username: str
    password: str
    stream_name: str = DEFAULT_STREAM_NAME
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> IggySettings:
    parts = urlsplit(url)
    if parts.scheme != "iggy" or not parts.hostname or parts.port is None:
        raise BusError(f"iggy URL must look like iggy://user:pass@host:port, got {url!r}")
    if parts.username is None or parts.password is None:
        raise BusError(f"iggy URL needs credentials (iggy://user:pass@host:port), got {url!r}")
    query = parse_qs(parts.query)
    try:
        timeout_s = float(query.get("timeout_s", [DEFAULT_TIMEOUT_S])[0])
    except ValueError as exc:
        raise BusError(f"iggy URL timeout_s must be a number: {url!r}") from exc
    return IggySettings(
        host=parts.hostname,
        port=parts.port,
        username=unquote(parts.username),
        password=unquote(parts.password),
        stream_name=query.get("stream", [DEFAULT_STREAM_NAME])[0],
        timeout_s=timeout_s,
    )


def from_url(url: str) -> IggyBus:
    return IggyBus(parse_url(url))


def _is_unavailable(error: RuntimeError) -> bool:
    text = str(error).lower()
    return any(hint in text for hint in _UNAVAILABLE_HINTS)


def _identifier(value: str) -> bytes:
    encoded = value.encode()
    return bytes((2, len(encoded))) + encoded


def _offset_request(group: str, stream: str, topic: str, partition: int) -> bytes:
    """Consumer, stream id, topic id, partition flag+id: the shared prefix of the offset commands."""
    return (
        bytes((_CONSUMER_GROUP_KIND,))
        + _identifier(group)
        + _identifier(stream)
        + _identifier(topic)
        + struct.pack("<BI", 1, partition)
    )


def _encode_headers(message: OutgoingMessage) -> dict[Any, Any] | None:
    headers: dict[Any, Any] = {}
    for name, value in message.headers.items():
        if not 1 <= len(name.encode()) <= _MAX_HEADER_BYTES:
            raise BusError(f"iggy header names must be 1-{_MAX_HEADER_BYTES} bytes, got {name!r}")
        if len(value.encode()) > _MAX_HEADER_BYTES:
            raise BusError(f"iggy header {name!r} is longer than {_MAX_HEADER_BYTES} bytes")
        headers[HeaderKey.String(name)] = HeaderValue.String(value) if value else _EMPTY_MARKER
    if message.key is not None:
        if len(message.key) > _MAX_HEADER_BYTES:
            raise BusError(f"iggy message keys are limited to {_MAX_HEADER_BYTES} bytes")
        headers[_KEY_HEADER] = HeaderValue.Raw(message.key) if message.key else _EMPTY_MARKER
    return headers or None


def _decode_headers(message: ReceiveMessage) -> tuple[bytes | None, dict[str, str]]:
    key: bytes | None = None
    headers: dict[str, str] = {}
    for header_key, header_value in (message.user_headers() or {}).items():
        if header_key == _KEY_HEADER:
            key = header_value.value if isinstance(header_value, HeaderValue.Raw) else b""
        elif isinstance(header_key, HeaderKey.String):
            headers[header_key.value] = (
                header_value.value if isinstance(header_value, HeaderValue.String) else ""
            )
    return key, headers


def _to_record(stream: str, partition: int, message: ReceiveMessage) -> Record:
    key, headers = _decode_headers(message)
    return Record(
        stream=stream,
        partition=partition,
        offset=message.offset(),
        value=message.payload(),
        key=key,
        headers=headers,
        # Iggy timestamps are microseconds since the epoch.
        timestamp_ms=message.timestamp() // 1000,
    )


class _ConnectionLostError(BusUnavailableError):
    """An established connection failed a request; worth one retry on a new one."""


def _client_header(reply: bytes, position: int) -> tuple[int, int, int]:
    """(client id, consumer-group count, position after) of one client record in a reply.

    Layout (core/binary_protocol responses/clients): client id u32, user id u32,
    transport u8, address length u32, address, consumer-group count u32.
    """
    client_id, _user, _transport, address_length = struct.unpack_from("<IIBI", reply, position)
    position += 13 + address_length
    (count,) = struct.unpack_from("<I", reply, position)
    return client_id, count, position + 4


def _memberships(reply: bytes) -> list[tuple[int, int, int]]:
    """(stream id, topic id, group id) of each group a GET_CLIENT/GET_ME reply's client belongs to."""
    _client, count, position = _client_header(reply, 0)
    return [struct.unpack_from("<III", reply, position + 12 * i) for i in range(count)]


async def _leave_inherited_groups(client: IggyClient) -> None:
    """Leave group memberships a brand-new session inherited.

    The server keeps memberships across a restart but numbers client sessions
    from 1 again, so a fresh connection can be handed a dead member's
    partitions and would hold them, unread, for as long as it lives. A session
    that has joined nothing yet owns no membership of its own.
    """
    reply = await client.send_binary_request(_GET_ME, b"")
    for stream_id, topic_id, group_id in _memberships(reply):
        _log.info("iggy: leaving inherited membership of group %d on topic %d", group_id, topic_id)
        await client.leave_consumer_group(stream_id, topic_id, group_id)


async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
    """The awaitable's result, or TimeoutError after `seconds`.

    Not asyncio.wait_for: on Python 3.11 it runs the awaitable as a task of its own, and when
    the caller is cancelled in the loop step that task completes in, it returns the result and
    the cancellation is lost (a stage asked to stop goes on with the answer). asyncio.timeout
    awaits in the caller's task, so a cancellation is always delivered.
    """
    async with asyncio.timeout(seconds):
        return await awaitable


class _Session:
    """One logged-in IggyClient, replaced after the server was unreachable."""

    def __init__(self, settings: IggySettings) -> None:
        self._settings = settings
        self._client: IggyClient | None = None
        # A connect-and-login still in progress: the next call waits for it rather than
        # opening another connection (see _connected).
        self._connecting: asyncio.Task[IggyClient] | None = None
        self._lock = asyncio.Lock()
        # Bumped per new client: a new client is a new server-side session
        # with no group memberships.
        self.generation = 0

    def _new_client(self) -> IggyClient:
        settings = self._settings
        return IggyClient(
            TcpConfig(
                server_address=settings.address,
                auto_login=AutoLogin.username_password(settings.username, settings.password),
                # No reconnects inside the SDK: a lost connection must surface
                # here, so every new server session passes _leave_inherited_groups
                # and consumers learn that their group membership is gone.
                reconnection=TcpReconnectionConfig(enabled=False),
                # Well inside any server heartbeat window, so a live but idle
                # member is never evicted from its group.
                heartbeat_interval=datetime.timedelta(seconds=1),
                nodelay=True,
            )
        )

    async def _connected(self) -> IggyClient:
        """The session's client; a new one connects and logs in within the timeout.

        An attempt that runs out of time goes on in the background and the next call waits
        for the same attempt: the SDK cannot abort a login or close a client, so abandoned
        attempts stayed open, and after a restart of a debug iggy-server under load (each
        login hashes a password) the services' retries piled up 20-30 connections each, the
        server answered no login within 5 s for minutes, and Iggy never came back.

        The attempt is never a local of this frame: an exception raised here keeps the frame
        (a log record, a stage's `retrying` hold it), and through it the attempt's client once
        logged in, whose connection then outlived the consumer that closed it.
        """
        async with self._lock:
            if self._client is not None:
                return self._client
            if self._connecting is None:
                self._connecting = asyncio.create_task(self._connect_and_login())
            timeout = self._settings.timeout_s
            try:
                client = await _within(timeout, asyncio.shield(self._connecting))
            except TimeoutError as exc:
                raise BusUnavailableError(
                    f"iggy at {self._settings.address}: no connection within {timeout}s"
                ) from exc
            except RuntimeError as exc:
                self._connecting = None
                if _is_unavailable(exc):
                    raise BusUnavailableError(f"iggy at {self._settings.address}: {exc}") from exc
                raise BusError(f"iggy at {self._settings.address}: login failed: {exc}") from exc
            except BaseException:
                if self._connecting is not None and self._connecting.done():
                    self._connecting = None
                raise
            self._connecting = None
            self._client = client
            self.generation += 1
            return client

    async def _connect_and_login(self) -> IggyClient:
        client = self._new_client()
        try:
            await client.connect()
            await client.login_user(self._settings.username, self._settings.password)
            await _leave_inherited_groups(client)
        except BaseException as exc:
            # An exception kept afterwards (a log record, a stage's `retrying`) keeps these
            # frames, and through their locals this client's connection would stay open.
            del client
            traceback.clear_frames(exc.__traceback__)
            raise
        return client

    def discard(self) -> None:
        # The SDK has no close(); dropping the last reference closes the socket.
        self._client = None

    def close(self) -> None:
        """Discard the client and any attempt to connect (the session is not used again)."""
        self.discard()
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None

    async def call(
        self, what: str, operation: Callable[[IggyClient], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        try:
            return await self._call_once(what, operation, timeout_s)
        except _ConnectionLostError:
            # A connection that died while idle (e.g. the server restarted)
            # fails its next request at once; one retry on a new connection
            # hides that. A server that is really down fails the reconnect fast.
            return await self._call_once(what, operation, timeout_s)

    async def _call_once(
        self, what: str, operation: Callable[[IggyClient], Awaitable[T]], timeout_s: float | None
    ) -> T:
        timeout = timeout_s if timeout_s is not None else self._settings.timeout_s
        try:
            # The client is no local of this frame: a kept exception keeps the frame, and a
            # discarded client's connection stayed open through it (see _connected).
            return await _within(timeout, operation(await self._connected()))
        except TimeoutError as exc:
            self.discard()
            raise BusUnavailableError(
                f"iggy {what} at {self._settings.address}: no reply within {timeout}s"
            ) from exc
        except RuntimeError as exc:
            if _is_unavailable(exc):
                self.discard()
                raise _ConnectionLostError(f"iggy {what} at {self._settings.address}: {exc}") from exc
            raise BusError(f"iggy {what}: {exc}") from exc

    async def raw(self, what: str, code: int, payload: bytes) -> bytes:
        return await self.call(what, lambda client: client.send_binary_request(code, payload))

    async def poll(
        self, stream: str, topic: str, partition: int, strategy: PollingStrategy, count: int
    ) -> list[ReceiveMessage]:
        # auto_commit=False: reading never moves a stored offset.
        return await self.call(
            f"poll {topic}[{partition}]",
            lambda client: client.poll_messages(stream, topic, partition, strategy, count, False),
        )

    async def create_if_missing(
        self,
        what: str,
        get: Callable[[IggyClient], Awaitable[T | None]],
        create: Callable[[IggyClient], Awaitable[object]],
    ) -> T | None:
        """What `get` finds, else create it; returns None when it was just created.

        Losing a creation race to another process is fine when the thing exists afterwards.
        """
        existing = await self.call(f"get {what}", get)
        if existing is not None:
            return existing
        try:
            await self.call(f"create {what}", create)
        except BusUnavailableError:
            raise
        except BusError:
            existing = await self.call(f"get {what}", get)
            if existing is None:
                raise
            return existing
        return None

    # Group offsets and membership, shared by consumers and the bus's admin calls.

    async def ensure_group(self, stream: str, topic: str, group: str) -> None:
        await self.create_if_missing(
            f"group {group}",
            lambda client: client.get_consumer_group(stream, topic, group),
            lambda client: client.create_consumer_group(stream, topic, group),
        )

    async def join(self, stream: str, topic: str, group: str) -> None:
        await self.ensure_group(stream, topic, group)
        await self.call(f"join {group}", lambda client: client.join_consumer_group(stream, topic, group))

    async def live_members(self, stream: str, topic: str, group: str) -> tuple[int, int] | None:
        """(members the group lists, members that are connected clients), None without the group.

        The server keeps memberships in its replicated metadata: a client that
        died with the server (SIGKILL) is still listed after a restart, holding
        its partitions, and no heartbeat ever evicts it because no session of
        its exists any more. Connected clients report their memberships.
        """
        details = await self.call(
            f"get group {group}", lambda client: client.get_consumer_group(stream, topic, group)
        )
        if details is None:
            return None
        topic_details = await self.call(f"get topic {topic}", lambda client: client.get_topic(stream, topic))
        stream_details = await self.call(f"get stream {stream}", lambda client: client.get_stream(stream))
        if topic_details is None or stream_details is None:
            return None
        key = (stream_details.id, topic_details.id, details.id)
        clients = await self.raw("get clients", _GET_CLIENTS, b"")
        connected = 0
        position = 0
        while position < len(clients):
            client_id, count, position = _client_header(clients, position)
            if not count:
                continue
            try:
                reply = await self.raw(f"get client {client_id}", _GET_CLIENT, struct.pack("<I", client_id))
            except BusUnavailableError:
                raise
            except BusError:  # it disconnected meanwhile
                continue
            if reply:
                connected += _memberships(reply).count(key)
        return details.members_count, connected

    async def reset_group_without_ghosts(self, stream: str, topic: str, group: str) -> dict[int, int] | None:
        """Recreate the group if it lists members that are not connected; returns its offsets then.

        Deleting the group is the only way to drop such members; live members
        notice the lost membership at their next sync and rejoin. The caller
        stores the returned offsets back once it owns the partitions.
        """
        counts = await self.live_members(stream, topic, group)
        if counts is None or counts[0] <= counts[1]:
            return None
        listed, connected = counts
        topic_details = await self.call(f"get topic {topic}", lambda client: client.get_topic(stream, topic))
        partitions = topic_details.partitions_count if topic_details is not None else 0
        offsets: dict[int, int] = {}
        for partition in range(partitions):
            committed = await self.committed(stream, topic, group, partition)
            if committed is not None:
                offsets[partition] = committed
        _log.warning(
            "iggy: group %s on %s lists %d members but %d are connected (left over from before a restart); "
            "recreating it with its offsets %s",
            group, topic, listed, connected, offsets,
        )  # fmt: skip
        try:
            await self.call(
                f"delete group {group}", lambda client: client.delete_consumer_group(stream, topic, group)
            )
        except BusUnavailableError:
            raise
        except BusError as exc:  # another member recreated it first
            _log.info("iggy: group %s on %s was reset by another member: %s", group, topic, exc)
        await self.ensure_group(stream, topic, group)
        return offsets

    async def leave(self, stream: str, topic: str, group: str) -> None:
        await self.call(f"leave {group}", lambda client: client.leave_consumer_group(stream, topic, group))

    async def assigned(self, stream: str, topic: str, group: str) -> list[int] | None:
        """This session's partitions in the group, or None when it is not a member."""
        reply = await self.raw(
            f"sync group {group}",
            _SYNC_CONSUMER_GROUP,
            _identifier(stream) + _identifier(topic) + _identifier(group),
        )
        if not reply:
            return None
        _generation, count = struct.unpack_from("<QI", reply)
        return list(struct.unpack_from(f"<{count}I", reply, 12))

    async def committed(self, stream: str, topic: str, group: str, partition: int) -> int | None:
        """The group's next offset to read on the partition, None if never committed."""
        reply = await self.raw(
            f"get offset {group}/{topic}[{partition}]",
            _GET_CONSUMER_OFFSET,
            _offset_request(group, stream, topic, partition),
        )
        if not reply:
            return None
        _partition, _current, stored = struct.unpack_from("<IQQ", reply)
        return int(stored) + 1

    async def store(self, stream: str, topic: str, group: str, partition: int, next_offset: int) -> None:
        """Store next_offset as the group's position; only a member owning the partition may."""
        request = _offset_request(group, stream, topic, partition)
        if next_offset <= 0:
            await self.raw(
                f"delete offset {group}/{topic}[{partition}]",
                _DELETE_CONSUMER_OFFSET,
                request + bytes((_ACK_QUORUM,)),
            )
            return
        await self.raw(
            f"store offset {group}/{topic}[{partition}]",
            _STORE_CONSUMER_OFFSET,
            request + struct.pack("<QB", next_offset - 1, _ACK_QUORUM),
        )


class IggyBus(Bus):
    """The bus over one Iggy server (TCP)."""

    backend = "iggy"

    def __init__(self, settings: IggySettings) -> None:
        self.settings = settings
        # Publishing, stream creation and health probes.
        self._session = _Session(settings)
        # Lag, offset and group reads (ingest's job watchdog, GetStatus, metrics) on a connection
        # of their own, opened at the first such read: a client sends one request at a time
        # (the SDK's TCP client is lockstep), and a watchdog tick's hundred-odd offset reads
        # queued on the publishing connection delayed publishes and made probes late.
        self._status = _Session(settings)
        self._partition_counts: dict[str, int] = {}
        self._partitioner = Partitioner()

    async def start(self) -> None:
        await self._session.call("ping", lambda client: client.ping())

    async def stop(self) -> None:
        self._session.close()
        self._status.close()

    async def _durability_options(self) -> dict[str, str]:
        # Without both knobs the server acks sends from its in-memory journal
        # (flushed every 1024 messages, never fsynced), and a SIGKILL loses
        # them; with both, every send is flushed and fsynced before the ack.
        catalog = await self._session.call(
            "describe options", lambda client: client.describe_options("topic")
        )
        keys = {spec.key for spec in catalog}
        options = {"enforce_fsync": "true"} if "enforce_fsync" in keys else {}
        if "messages_required_to_save" in keys:
            options["messages_required_to_save"] = "1"
        return options

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        stream = self.settings.stream_name
        await self._session.create_if_missing(
            f"stream {stream}",
            lambda client: client.get_stream(stream),
            lambda client: client.create_stream(stream),
        )
        options: dict[str, str] | None = None
        for spec in specs:
            existing = await self._topic_partitions(spec.name)
            if existing is None:
                if options is None:
                    options = await self._durability_options()
                existing = await self._create_topic(spec, options)
            self._partition_counts[spec.name] = existing

    async def _create_topic(self, spec: StreamSpec, options: dict[str, str]) -> int:
        """Create the topic; returns its partition count (another process's, if it won the race)."""
        stream = self.settings.stream_name
        details = await self._session.create_if_missing(
            f"topic {spec.name}",
            lambda client: client.get_topic(stream, spec.name),
            lambda client: client.create_topic(
                stream,
                spec.name,
                spec.partitions,
                # Retention is the services' business, never the log's.
                message_expiry=IggyExpiry.NeverExpire(),
                max_topic_size=MaxTopicSize.Unlimited(),
                options=options,
            ),
        )
        return spec.partitions if details is None else details.partitions_count

    async def _topic_partitions(self, name: str, session: _Session | None = None) -> int | None:
        stream = self.settings.stream_name
        details = await (session or self._session).call(
            f"get topic {name}", lambda client: client.get_topic(stream, name)
        )
        return None if details is None else details.partitions_count

    async def partitions(self, stream: str) -> int:
        return await self._partitions_via(stream, self._session)

    async def _partitions_via(self, stream: str, session: _Session) -> int:
        cached = self._partition_counts.get(stream)
        if cached is not None:
            return cached
        count = await self._topic_partitions(stream, session)
        if count is None:
            raise BusError(f"iggy stream {stream!r} does not exist (ensure_streams first)")
        self._partition_counts[stream] = count
        return count

    async def publish(self, stream: str, messages: Sequence[OutgoingMessage]) -> list[PublishedPosition]:
        if not messages:
            return []
        count = await self.partitions(stream)
        batches: dict[int, list[int]] = defaultdict(list)
        for index, message in enumerate(messages):
            batches[self._partitioner.partition(stream, message.key, count)].append(index)
        positions: list[PublishedPosition | None] = [None] * len(messages)
        for partition, indexes in batches.items():
            batch = [
                SendMessage(messages[i].value, user_headers=_encode_headers(messages[i])) for i in indexes
            ]
            base = await self._send(stream, partition, batch)
            for position, index in enumerate(indexes):
                positions[index] = PublishedPosition(partition, base + position)
        return [position for position in positions if position is not None]

    async def _send(self, stream: str, partition: int, batch: list[SendMessage]) -> int:
        """Send one partition's batch; returns the offset given to its first message."""
        iggy_stream = self.settings.stream_name
        response = await self._session.call(
            f"send {stream}[{partition}]",
            lambda client: client.send_messages(iggy_stream, stream, partition, batch),
        )
        if not response.confirmations:
            raise BusError(f"iggy send {stream}[{partition}]: the server reported no offsets")
        base: int = response.confirmations[0].base_offset
        return base

    def consumer(
        self,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition = "earliest",
        max_in_flight: int = 1000,
    ) -> Consumer:
        return IggyGroupConsumer(self, streams, group, start=start, max_in_flight=max_in_flight)

    async def committed_offsets(self, group: str, stream: str) -> dict[int, int]:
        iggy_stream = self.settings.stream_name
        result: dict[int, int] = {}
        for partition in range(await self._partitions_via(stream, self._status)):
            committed = await self._status.committed(iggy_stream, stream, group, partition)
            if committed is not None:
                result[partition] = committed
        return result

    async def consumer_groups(self, stream: str) -> list[str]:
        iggy_stream = self.settings.stream_name
        groups = await self._status.call(
            f"get groups of {stream}", lambda client: client.get_consumer_groups(iggy_stream, stream)
        )
        partitions = await self._partitions_via(stream, self._status)
        found = []
        for details in groups:
            for partition in range(partitions):
                if await self._status.committed(iggy_stream, stream, details.name, partition) is not None:
                    found.append(str(details.name))
                    break
        return sorted(found)

    async def end_offsets(self, stream: str) -> dict[int, int]:
        iggy_stream = self.settings.stream_name
        details = await self._status.call(
            f"get topic {stream}", lambda client: client.get_topic(iggy_stream, stream)
        )
        if details is None:
            raise BusError(f"iggy stream {stream!r} does not exist")
        # current_offset is the last written offset, and also 0 for an empty partition.
        return {
            p.id: 0 if p.messages_count == 0 and p.current_offset == 0 else p.current_offset + 1
            for p in details.partitions
        }

    async def set_committed_offsets(self, group: str, stream: str, offsets: Mapping[int, int]) -> None:
        # Iggy only lets a member owning a partition store its offset, so a
        # private session joins the (paused, hence empty) group for the reset.
        iggy_stream = self.settings.stream_name
        session = _Session(self.settings)
        try:
            await session.join(iggy_stream, stream, group)
            owned = set(await session.assigned(iggy_stream, stream, group) or [])
            foreign = sorted(set(offsets) - owned)
            if foreign:
                raise BusError(
                    f"iggy group {group!r} on {stream!r} still owns partitions {foreign}; pause it first"
                )
            for partition, next_offset in offsets.items():
                await session.store(iggy_stream, stream, group, partition, next_offset)
            await session.leave(iggy_stream, stream, group)
        finally:
            session.close()

    async def _first_offsets(self, stream: str, strategy: PollingStrategy) -> dict[int, int]:
        """Per partition, the offset of the first message the strategy selects, else the end."""
        iggy_stream = self.settings.stream_name
        ends = await self.end_offsets(stream)
        result: dict[int, int] = {}
        for partition, end in ends.items():
            found = await self._status.poll(iggy_stream, stream, partition, strategy, 1)
            result[partition] = found[0].offset() if found else end
        return result

    async def offsets_for_timestamp(self, stream: str, timestamp_ms: int) -> dict[int, int]:
        return await self._first_offsets(stream, PollingStrategy.Timestamp(timestamp_ms * 1000))

    async def earliest_offsets(self, stream: str) -> dict[int, int]:
        return await self._first_offsets(stream, PollingStrategy.First())

    async def healthy(self) -> bool:
        try:
            await self._session.call("ping", lambda client: client.ping(), timeout_s=_HEALTH_TIMEOUT_S)
        except BusError:
            return False
        return True


class IggyGroupConsumer(Consumer):
    """A consumer-group member with its own connection (a server-side member is a client session)."""

    # A failed start keeps its session, whose login (if still under way) the next start waits
    # for; joining again as a member is a no-op on the server.
    starts_again_in_place = True

    def __init__(
        self,
        bus: IggyBus,
        streams: Sequence[str],
        group: str,
        *,
        start: StartPosition,
        max_in_flight: int,
    ) -> None:
        self._bus = bus
        self._streams = list(dict.fromkeys(streams))
        self._group = group
        self._start = start
        self._max_in_flight = max(1, max_in_flight)
        self._iggy_stream = bus.settings.stream_name
        self._session = _Session(bus.settings)
        self._assigned: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._seeks: dict[TopicPartition, int] = {}
        self._polled: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._synced_at = 0.0
        self._synced_generation = -1
        self._rotation = 0

    async def start(self) -> None:
        for stream in self._streams:
            await self._bus.partitions(stream)
            await self._join(stream)
        await self._sync()

    async def _join(self, stream: str) -> list[int]:
        """Join (dropping members left over from a server restart first); returns our partitions."""
        saved = await self._session.reset_group_without_ghosts(self._iggy_stream, stream, self._group)
        await self._session.join(self._iggy_stream, stream, self._group)
        partitions = await self._session.assigned(self._iggy_stream, stream, self._group) or []
        for partition, next_offset in (saved or {}).items():
            if partition in partitions:
                await self._session.store(self._iggy_stream, stream, self._group, partition, next_offset)
            else:
                # Its new owner starts from the group's start position: a replay, never a loss.
                _log.warning(
                    "iggy %s: %s[%d] went to another member before its offset %d was restored",
                    self._group, stream, partition, next_offset,
                )  # fmt: skip
        return partitions

    async def stop(self) -> None:
        try:
            for stream in self._streams:
                await self._session.leave(self._iggy_stream, stream, self._group)
        except BusError as exc:
            # The server drops a closed session's memberships itself.
            _log.info("iggy consumer %s could not leave cleanly: %s", self._group, exc)
        finally:
            self._session.close()
            self._assigned = []

    async def _sync(self) -> None:
        """Re-read this member's partitions; rejoin if the server forgot the membership."""
        assigned: list[TopicPartition] = []
        for stream in self._streams:
            partitions = await self._session.assigned(self._iggy_stream, stream, self._group)
            if partitions is None:
                partitions = await self._join(stream)
            assigned.extend((stream, p) for p in sorted(partitions))
        for tp in set(self._assigned) - set(assigned):
            self._positions.pop(tp, None)
            self._polled.pop(tp, None)
            self._committed.pop(tp, None)
        for tp in assigned:
            if tp not in self._positions:
                self._positions[tp] = await self._initial_position(tp)
        self._assigned = assigned
        self._synced_at = time.monotonic()
        self._synced_generation = self._session.generation

    async def _initial_position(self, tp: TopicPartition) -> int:
        if tp in self._seeks:
            return self._seeks.pop(tp)
        stream, partition = tp
        committed = await self._session.committed(self._iggy_stream, stream, self._group, partition)
        if committed is not None:
            self._committed[tp] = committed
            return committed
        if self._start == "latest":
            return (await self._bus.end_offsets(stream))[partition]
        return 0

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while True:
            stale = time.monotonic() - self._synced_at >= _SYNC_INTERVAL_S
            if stale or self._synced_generation != self._session.generation:
                await self._sync()
            records = await self._fetch(min(max_records, self._max_in_flight))
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            await asyncio.sleep(min(_IDLE_POLL_S, remaining))

    async def _fetch(self, limit: int) -> list[Record]:
        records: list[Record] = []
        if not self._assigned:
            return records
        # Start each fetch at a different partition so none is starved by a busy one.
        self._rotation = (self._rotation + 1) % len(self._assigned)
        order = self._assigned[self._rotation :] + self._assigned[: self._rotation]
        for tp in order:
            if len(records) >= limit:
                break
            stream, partition = tp
            position = self._positions[tp]
            try:
                messages = await self._session.poll(
                    self._iggy_stream,
                    stream,
                    partition,
                    PollingStrategy.Offset(position),
                    limit - len(records),
                )
            except BusError:
                if not records:
                    raise
                # Positions already moved past what this fetch read from other partitions:
                # raising would drop those records, and the next commit would skip them
                # for good (seen when the server was SIGKILLed mid-fetch). Hand them over;
                # the next poll meets the error again.
                _log.warning(
                    "iggy %s: poll of %s[%d] failed after %d records",
                    self._group,
                    stream,
                    partition,
                    len(records),
                )
                break
            for message in messages:
                records.append(_to_record(stream, partition, message))
            if messages:
                self._positions[tp] = messages[-1].offset() + 1
                self._polled[tp] = self._positions[tp]
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        targets = dict(self._polled) if offsets is None else dict(offsets)
        for tp, next_offset in targets.items():
            if self._committed.get(tp) == next_offset:
                continue
            await self._store(tp, next_offset)
            self._committed[tp] = next_offset

    async def _store(self, tp: TopicPartition, next_offset: int) -> None:
        stream, partition = tp
        try:
            await self._session.store(self._iggy_stream, stream, self._group, partition, next_offset)
            return
        except BusUnavailableError:
            raise
        except BusError:
            # Refused: the partition moved to another member, or our session
            # lost its membership. Re-sync; only a partition we still own retries.
            await self._sync()
            if tp not in self._assigned:
                _log.warning("iggy %s: %s[%d] was reassigned before commit", self._group, stream, partition)
                return
        await self._session.store(self._iggy_stream, stream, self._group, partition, next_offset)

    async def seek(self, stream: str, partition: int, offset: int) -> None:
        tp = (stream, partition)
        if tp in self._positions:
            self._positions[tp] = offset
            # commit() without arguments commits positions, as after a Kafka seek.
            self._polled[tp] = offset
        else:
            self._seeks[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)
