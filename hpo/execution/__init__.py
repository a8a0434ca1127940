"""Execution: one trial, a packed population of trials, or trials on worker processes."""
