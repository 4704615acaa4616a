"""Monitoring the prediction log against the production model's reference: per-window queries, the drift
reference measured as production measures, the tests and estimates (`stats`, pure), the per-window drift
report with its alerts (`drift`), and the figures."""
