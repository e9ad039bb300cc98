"""Data loaders and the retraining loop (dissertation §3.4.2)."""
