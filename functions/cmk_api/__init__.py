"""The CMK API Lambda (API Gateway HTTP API, payload format 2.0)."""
