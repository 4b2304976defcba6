"""Domain: tenants, the key hierarchy (L1-L4), keystores, audit and PKI. Imports only storage below it."""
