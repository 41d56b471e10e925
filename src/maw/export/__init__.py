"""A trained model as a first-class artifact: a sentence-transformers folder with its model card.

``export_sentence_transformers(checkpoint_dir, out_dir, evaluation=None) -> out_dir`` (``maw export``)
writes a folder ``SentenceTransformer(out_dir, trust_remote_code=True)`` loads, MAW models included
(the MAW code is shipped inside it), plus a Hugging Face model card (``README.md``). See
:mod:`maw.export.sentence_transformers` and :mod:`maw.export.model_card`.
"""

from maw.export.sentence_transformers import ExportError, export_sentence_transformers

__all__ = ["ExportError", "export_sentence_transformers"]
