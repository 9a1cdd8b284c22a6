"""Evaluation: built-in tasks with ablations and an AR baseline (`llada eval`), and the
lm-evaluation-harness adapter (`llada.evaluation.harness`, needs the `eval` extra)."""
