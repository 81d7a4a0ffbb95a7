"""The Dagster layer: assets, checks and the Definitions root (``assets.definitions``).

Kept import-light: ``restem verify ...`` must not pay for importing dagster.
"""
