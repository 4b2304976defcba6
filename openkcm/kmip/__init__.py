"""KMIP operations: a dispatch table from operation to one module per operation, over the protocol codec."""
