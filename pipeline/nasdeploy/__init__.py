"""nasdeploy: hardware-aware NAS from latency tables to a measured, exported network."""

__version__ = "0.1.0"
