"""Hugging Face checkpoints <-> our models: pure mappings of configs and parameter trees."""
