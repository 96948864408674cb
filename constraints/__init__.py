"""Compiling requests into canvases and constraints. Pure Python: imported by the API (no torch)."""
