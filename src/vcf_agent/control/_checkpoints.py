"""Consumer-group positions: reporting them and moving them while consumption is paused."""

from __future__ import annotations

from collections.abc import Sequence

from vcf_agent.bus import Bus
from vcf_agent.control._flags import FieldError
from vcf_agent.processing import StreamProcessor
from vcf_agent.v1 import control_pb2


class NotPausedError(Exception):
    """Moving a checkpoint under a running consumer would be overwritten by its next commit."""


class UnknownGroupError(LookupError):
    pass


def select(processors: Sequence[StreamProcessor], group: str) -> list[StreamProcessor]:
    """The processors of `group` (all when empty); UnknownGroupError when none match."""
    chosen = [p for p in processors if not group or p.group == group]
    if group and not chosen:
        known = ", ".join(sorted({p.group for p in processors})) or "none"
        raise UnknownGroupError(f"this service runs no consumer group {group!r} (it runs: {known})")
    return chosen


def group_state(processor: StreamProcessor) -> control_pb2.ConsumerGroupState:
    """A processor's group as the control API shows it, before its partitions' lags are added."""
    return control_pb2.ConsumerGroupState(
        group=processor.group,
        streams=processor.streams,
        state=processor.state,
        in_flight=processor.in_flight,
        retry_reason=""
        if processor.retrying is None
        else f"{type(processor.retrying).__name__}: {processor.retrying}",
    )


async def group_states(
    bus: Bus, processors: Sequence[StreamProcessor]
) -> list[control_pb2.ConsumerGroupState]:
    states = []
    for processor in processors:
        state = group_state(processor)
        for stream in processor.streams:
            state.partitions.extend(await _lags(bus, processor.group, stream))
        states.append(state)
    return states


async def _lags(bus: Bus, group: str, stream: str) -> list[control_pb2.PartitionLag]:
    return [
        control_pb2.PartitionLag(
            stream=stream,
            group=group,
            partition=lag.partition,
            committed=lag.committed,
            end=lag.end,
            lag=lag.lag,
        )
        for lag in await bus.lag(group, stream)
    ]


async def reset_checkpoint(
    bus: Bus, processors: Sequence[StreamProcessor], request: control_pb2.ResetCheckpointRequest
) -> list[control_pb2.PartitionLag]:
    """Overwrite the group's committed offsets and move this instance's consumers to them."""
    if not request.group:
        raise FieldError("group", "group is required")
    chosen = select(processors, request.group)
    streams = sorted({s for p in chosen for s in p.streams})
    if request.stream and request.stream not in streams:
        raise FieldError(
            "stream", f"group {request.group!r} reads {', '.join(streams)}, not {request.stream!r}"
        )
    position = request.WhichOneof("position")
    if position is None:
        raise FieldError("position", "set one of earliest, latest, offset or timestamp")
    for processor in chosen:
        # Waiting for the loop to hold nothing: a batch still in hand would commit over the reset.
        if not processor.paused or not await processor.wait_parked(5.0):
            raise NotPausedError(f"pause group {request.group!r} before resetting its checkpoint")
    result: list[control_pb2.PartitionLag] = []
    for stream in [request.stream] if request.stream else streams:
        targets = await _targets(bus, stream, request, position)
        await bus.set_committed_offsets(request.group, stream, targets)
        for partition, offset in targets.items():
            for processor in chosen:
                await processor.seek(stream, partition, offset)
        result.extend(lag for lag in await _lags(bus, request.group, stream) if lag.partition in targets)
    return result


async def _targets(
    bus: Bus, stream: str, request: control_pb2.ResetCheckpointRequest, position: str
) -> dict[int, int]:
    earliest = await bus.earliest_offsets(stream)
    ends = await bus.end_offsets(stream)
    if request.HasField("partition"):
        if request.partition not in ends:
            raise FieldError("partition", f"{stream} has partitions 0..{len(ends) - 1}")
        partitions = [request.partition]
    else:
        partitions = sorted(ends)
    if position == "earliest":
        return {p: earliest.get(p, 0) for p in partitions}
    if position == "latest":
        return {p: ends[p] for p in partitions}
    if position == "timestamp":
        by_time = await bus.offsets_for_timestamp(stream, request.timestamp.ToMilliseconds())
        return {p: by_time.get(p, ends[p]) for p in partitions}
    if not request.HasField("partition") and len(ends) > 1:
        raise FieldError("partition", "an offset reset needs a partition (offsets are per partition)")
    for p in partitions:
        if not earliest.get(p, 0) <= request.offset <= ends[p]:
            raise FieldError("offset", f"{stream}[{p}] holds offsets {earliest.get(p, 0)}..{ends[p]}")
    return dict.fromkeys(partitions, request.offset)
