"""tlx bench: what int8 costs in accuracy and buys in latency, size and memory,
measured through tlx.runtime on the run's held-out test split."""
