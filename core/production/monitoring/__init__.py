"""Monitoring the prediction log against the production model's reference: per-window queries, the
reference, alerts and charts. Drift tests, label-shift and accuracy estimates belong here."""
