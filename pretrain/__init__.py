"""The trainer and its entry points (train; evaluate, finetune and generate build on it)."""
from pretrain import storage as _storage

_storage.configure()  # before any storage client reads the environment
