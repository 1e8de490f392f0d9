"""Programs that drive several layers: the demo, the evaluation (offline and through a running
node) and the node-level benchmark."""
