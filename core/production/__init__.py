"""Stage 5, production: scoring uploads and files, the prediction log and feedback, simulated
traffic, the ready demo, and monitoring (its own sub-package: queries, reference, alerts, charts)."""
