"""Backstage entity building, annotations and descriptor parsing."""
