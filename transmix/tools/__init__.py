"""Tools around the study: step and loader benchmarks, cost from counted FLOPs, the fidelity table, weight export,
the import graph, and the prepared GPU check."""
