"""DRCL: Deep Reversible Consistency Learning for cross-modal retrieval."""

__version__ = "0.1.0"
