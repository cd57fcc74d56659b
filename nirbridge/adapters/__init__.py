"""Backends: the one Adapter interface (``base``) and its implementations (reference, jax, torch)."""
