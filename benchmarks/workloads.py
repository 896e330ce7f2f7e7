"""The benchmark workloads (docs/benchmarks.md); defined once in the package so the demo
can use them too."""
from fastcollate._workloads import FLAT, WORKLOADS, Workload  # noqa: F401
