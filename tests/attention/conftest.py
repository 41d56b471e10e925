"""Fixtures for tests/attention (the helpers live in maw_testkit.py, importable by unique name)."""

from maw_testkit import *  # noqa: F401,F403
from maw_testkit import _one_thread  # noqa: F401  (autouse fixture; star-import skips underscored names)
