"""Stub of the WebUI's `modules` package (tests only)."""
