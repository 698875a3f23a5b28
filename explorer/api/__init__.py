"""The JSON API for scripts: one router per resource, joined in `main`, with an OpenAPI schema.

Page views and the API make the same engine calls; where an answer is an engine type, the
schema is that type (or derived from it in `schemas`), not a copy.
"""
