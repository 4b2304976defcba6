"""KMIP protocol: the TTLV codec and message types. A leaf: imports nothing of ours but neutral modules."""
