"""Tests of the router service."""
