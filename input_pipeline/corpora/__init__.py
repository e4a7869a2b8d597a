"""Pretraining corpora: tfds sources and mixtures, local text files, gs:// mirrors, and the
tokenized-once token files."""
