"""The zoo's library (the in-context learner, training, in-context evaluation, collection), its
reports (`zoo.reports`) and its commands (`zoo.cli`)."""
