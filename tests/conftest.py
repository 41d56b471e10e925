"""Puts tests/ on sys.path so helper modules shared across test folders (``tiny_bert``) import by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
