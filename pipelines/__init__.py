"""Kubeflow pipeline definitions: wiring and platform settings only."""
