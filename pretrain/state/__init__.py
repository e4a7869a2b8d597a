"""A run's saved state: orbax checkpoints with their checksums, resume and inference loading,
the run's files, and the results of the best checkpoints."""
