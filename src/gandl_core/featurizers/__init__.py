"""Counterpart featurizers: random-d, handcrafted, convae, densenet. All share embed's streaming engine."""
