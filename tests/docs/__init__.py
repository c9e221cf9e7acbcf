"""Tests that run what the documentation tells a user to run."""
