"""Performance models: workloads, exact systolic timing, the event-driven scheduler, target models."""
