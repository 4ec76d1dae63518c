"""Sticky percentage rollout: a unit's bucket depends only on (flag key, unit).

Hashing the flag key with the unit (MurmurHash3, as flagd's fractional
evaluation does) gives every flag an independent split, and comparing a fixed
bucket against the percentage makes raising it only ever add units: whoever
was in at 10% is still in at 20%, on every service, after every restart.
"""

from __future__ import annotations

import mmh3

_HASH_SPACE = 2**32


def bucket(flag_key: str, unit: str) -> float:
    """The unit's position in [0, 100) for this flag."""
    return mmh3.hash(f"{flag_key}{unit}".encode(), signed=False) * 100 / _HASH_SPACE


def in_rollout(flag_key: str, unit: str, percentage: float) -> bool:
    return bucket(flag_key, unit) < percentage
