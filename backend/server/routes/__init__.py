"""One router per resource (see ``backend.server.app`` for how they are mounted)."""
