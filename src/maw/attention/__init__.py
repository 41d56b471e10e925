"""MAW attention: the block (:mod:`maw.attention.maw`) and its depth routers (:mod:`maw.attention.routers`)."""

from maw.attention.maw import MAWSelfAttention, RoutingRecord, key_validity
from maw.attention.routers import DepthRouter, RowNoise, route

__all__ = ["DepthRouter", "MAWSelfAttention", "RoutingRecord", "RowNoise", "key_validity", "route"]
