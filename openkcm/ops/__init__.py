"""Use cases: what the adapters (Lambda handlers, KMIP listener, CLI) ask of the domain."""
