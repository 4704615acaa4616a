"""Stage 6, the command line `python -m core <command>`: one module per stage and a shared progress
printer. Commands import heavy modules (torch) only when they run."""
