"""Execution engines: the HTTP client engine, and detection of a usable Chromium."""
