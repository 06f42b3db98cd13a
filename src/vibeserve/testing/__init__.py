"""Test doubles and fixtures shipped with vibeserve, so tests and users can run without a model or network."""
