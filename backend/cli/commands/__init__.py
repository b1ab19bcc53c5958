"""One module per ``softmap`` command (discovered by ``backend.cli.build_parser``)."""
