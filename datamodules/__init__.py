"""Datasets of learning histories: the on-disk format, its reader, and the Lightning DataModule."""
