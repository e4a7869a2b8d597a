"""Flax NNX models: shared layers, the GPT decoder and the BERT encoder, decoding, size
tables and Hugging Face weight mappings."""
