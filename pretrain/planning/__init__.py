"""Planning a run before paying for it: what a train step holds per device, from the config."""
