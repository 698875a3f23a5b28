"""Capture Explorer benchmark: the server against raw sharkd on a ~1M-packet capture.

Run from the repository root: `.venv/bin/python -m bench [--quick]`.
"""
