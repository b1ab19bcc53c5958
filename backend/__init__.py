"""SoftMap backend: regions, tiles, SoftCon-compatible models and a DuckDB embedding cache.

Everything the app, the CLI and the tests can do lives here; this package never imports streamlit.
"""

__version__ = "0.1.0"
