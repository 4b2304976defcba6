"""Benchmarks: KMIP load (OpenKCM vs PyKMIP's server) and libmongocrypt explicit encryption throughput.

``python -m bench`` runs both with the defaults and prints the configuration beside the figures.
"""
