"""Tests of the client programs under clients/, run against live services."""
