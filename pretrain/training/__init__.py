"""Training: the loop, the compiled steps, the optimizer, run lengths, the data it reads, the
checks of a config before anything runs, goodput and the metrics it writes."""
