"""The applications of the harness: the CLI, the campaign and its plan, the regression suite and its gate, profiling, self-checks, the kernels check, text tables and the published figures."""
