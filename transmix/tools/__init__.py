"""Tools around the study: step and loader benchmarks, cost from counted FLOPs, a study trained in chunks of a time
budget, the fidelity table, weight export, the import graph, and the prepared GPU check."""
