"""The zoo's library: the in-context learner, training, in-context evaluation, collection and
selection. Its reports are the package `reporting` and its commands the package `cli`, both above
it (and above `sweeps`)."""
