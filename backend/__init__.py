"""SoftMap backend, in stages: imagery → models → store → embedding → analyses → outputs.

``backend.service`` is the application layer the CLI, the app and the HTTP service call; this
package never imports streamlit. ``docs/architecture.md`` shows who imports whom.
"""

__version__ = "0.1.0"
