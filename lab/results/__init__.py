"""Run results: the model, the run directory, history, regressions and reports."""
