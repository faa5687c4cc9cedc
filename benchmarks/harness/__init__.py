"""The benchmark runner's pieces: environments, processes, workloads, report."""
