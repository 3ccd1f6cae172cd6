"""Benchmarks (``adaptivestep bench ...``): each module exposes ``run(...) -> dict`` and ``main(argv)``."""
