"""Input pipeline: tfds sources, tokenizers, packing and step-indexed loaders."""
from pretrain import storage as _storage

_storage.configure()  # before any storage client reads the environment
