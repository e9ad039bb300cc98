"""Latency tables: schema and I/O, profiler, overhead model, predictor (sums and expectations), validation."""

from nasdeploy.latency.table import LatencyTable, default_table_path, load_table, save_table

__all__ = ["LatencyTable", "default_table_path", "load_table", "save_table"]
