"""The embedded default: everything of OpenKCM on one machine, AWS emulated by a durable moto server."""
