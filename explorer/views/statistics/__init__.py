"""The statistics pages: each module here registers its statistic (see registry.py)."""
