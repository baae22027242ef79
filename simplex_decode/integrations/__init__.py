"""Adapters to other libraries (imported on demand, never by ``import simplex_decode``):

* :mod:`simplex_decode.integrations.transformers` — any Decoder as a Hugging Face
  ``transformers.LogitsProcessor`` (``pip install 'simplex_decode[transformers]'``).
"""
