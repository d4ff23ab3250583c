"""Stored code actions: model, store, service."""
