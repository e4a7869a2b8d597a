"""The trainer and its entry points (train; evaluate, finetune and generate build on it)."""
