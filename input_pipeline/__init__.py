"""Input pipeline: tfds sources, tokenizers, packing and step-indexed loaders."""
