"""The CLI fuzzing harness: cases run in worker processes, judged by one oracle (see harness.py)."""
