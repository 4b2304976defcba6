"""The KMIP server adapter (Fargate container in production, a thread of `openkcm local up` locally)."""
