"""One module per KMIP operation. Each exposes ``handle(ctx, payload, batch) -> Outcome``."""
