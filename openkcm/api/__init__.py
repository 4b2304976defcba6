"""CMK REST API: Powertools routers per resource and one error->HTTP map. Imported by the Lambda handler."""
