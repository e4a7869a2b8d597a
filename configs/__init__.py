"""ml_collections experiment files; pick one with --config=configs/<file>.py:<arg>."""
