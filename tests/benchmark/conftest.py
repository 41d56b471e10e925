"""Fixtures for tests/benchmark (the helpers live in bench_testkit.py, importable by unique name)."""

from bench_testkit import *  # noqa: F401,F403
