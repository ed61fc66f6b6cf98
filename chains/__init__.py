"""Chains, by name: each module exposes `build_chain(settings, retriever, model) -> Runnable`."""
