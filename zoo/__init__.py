"""The zoo: in-context learner, training CLI, in-context evaluation and reports."""
