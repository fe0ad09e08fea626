"""statevad — STATE video anomaly detection, re-implemented for modern CPUs and GPUs."""

__version__ = "0.1.0"
