"""Repositories: queries and inserts for one entity each. They add and flush, never commit."""
