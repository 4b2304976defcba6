"""Which repeated refusals become audit records: probing and connection floods must not become floods of
audit writes (and of security events on the bus), yet none may pass unrecorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable


class RefusalThrottle:
    """The first refusal for a key is recorded at once, then at most one per ``interval`` seconds, which
    carries the number refused in between. Per process; bounded (cleared past ``bound`` keys, not an LRU)."""

    def __init__(self, interval: float = 60.0, bound: int = 10_000) -> None:
        self.interval, self._bound = interval, bound
        self._seen: dict[Hashable, tuple[float, int]] = {}  # key -> (last record, refused since)
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> int | None:
        """None: only count this refusal; else record it, with this many refused since the last record."""
        now = time.monotonic()
        with self._lock:
            last, count = self._seen.get(key, (-self.interval, 0))
            if now - last < self.interval:
                self._seen[key] = (last, count + 1)
                return None
            if len(self._seen) > self._bound:
                self._seen.clear()
            self._seen[key] = (now, 0)
            return count

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
