"""`qa watch`: keep an index fresh while files in the documents folder change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .display import printable
from .documents import scan_documents

log = logging.getLogger("qa")

SETTLE_SECONDS = 0.3  # wait for a burst of saves to finish before updating
RESCAN_SECONDS = 30.0  # check anyway now and then, in case an event was missed


def watch(
    engine,
    interval: float = 1.0,
    stop: threading.Event | None = None,
    on_update: Callable[[object], None] | None = None,
) -> None:
    """Update ``engine``'s index whenever its documents change, until ``stop`` is set."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    stop = stop or threading.Event()
    changed = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type not in ("opened", "closed_no_write"):
                changed.set()

    engine.refresh()
    _say(f"watching {engine.seeds_dir} (index {engine.backend.location}); Ctrl-C to stop")
    observer = Observer()
    observer.schedule(Handler(), str(engine.seeds_dir), recursive=True)
    observer.start()
    last_check = time.monotonic()
    try:
        while not stop.is_set():
            fired = changed.wait(interval)
            if not fired and time.monotonic() - last_check < RESCAN_SECONDS:
                continue
            if fired:
                time.sleep(SETTLE_SECONDS)
                changed.clear()
            last_check = time.monotonic()
            found = scan_documents(engine.seeds_dir)
            reasons = engine.stale_reasons(found)
            if not reasons:
                continue
            try:
                report = engine.rebuild(found=found)
            except Exception as e:  # noqa: BLE001 - the previous index keeps serving
                _say(f"not updated: {e}")
                continue
            _say(
                f"updated ({'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''}): "
                f"{report.documents} documents, {report.passages} passages, "
                f"{report.embedded} embedded in {report.seconds:.2f} s"
            )
            if on_update:
                on_update(report)
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join()


def _say(message: str) -> None:
    print(printable(f"qa watch: {message}", newlines=False), flush=True)
