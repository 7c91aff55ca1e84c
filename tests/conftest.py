"""What every test shares: wgpu-py's poll threads may be stopped from themselves.

wgpu-py 0.32 finalizes a device on whichever thread the cyclic garbage collector
runs. A poll thread keeps polling, running Python, while a map's token lives,
and a token left in cyclic garbage lives until a collection: the collection
then often runs on that very poll thread, finalizing the device there, and the
device's ``__del__`` joins its own poll thread ("cannot join current thread", an
unraisable error that fails whichever test is running; seen once in CI on
Python 3.12). Here a poll thread asked to stop from itself stops without the
join; joined from any other thread it stops as before. tensorferry never hands
wgpu-py's poll threads work (it maps with its own poll, the conformance suite's
raw reads included); the tests' raw wgpu-py users and the bench's wgpu-py path do.
"""

from __future__ import annotations

import threading
from typing import Any


def pytest_configure() -> None:
    """Patch ``PollThread.stop`` (when wgpu is installed)."""
    try:
        from wgpu.backends.wgpu_native._poller import PollThread
    except ImportError:
        return
    stop = PollThread.stop

    def stop_without_joining_itself(self: Any) -> None:
        if threading.current_thread() is not self:
            stop(self)
            return
        # What stop() does before its join: the loop ends once it next looks.
        self._shutdown = True
        self._poll_func = lambda _block: None
        self._token_ids.clear()
        self._event.set()

    PollThread.stop = stop_without_joining_itself  # type: ignore[method-assign]
