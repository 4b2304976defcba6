"""One Powertools Router per resource; :mod:`openkcm.api.app` joins them under ``/v1``."""
