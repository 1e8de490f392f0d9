"""Training on synthetic scans: targets, losses, data, loop and CLI (see `cli`)."""
