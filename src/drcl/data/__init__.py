"""Data sets: sources, preparation, extraction and the prepared file format."""
