"""maw: Multi-Attention-Weight (MAW) transformers for dense retrieval, and a benchmark harness."""

__version__ = "0.1.0"
