"""Compatibility with the old SageMaker containers library: ``training_env()`` for existing scripts."""
