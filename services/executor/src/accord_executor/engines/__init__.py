"""Execution engines: the HTTP client engine, and the browser engine behind its proxy."""
