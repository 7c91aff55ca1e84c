"""Use tensorferry with your own wgpu device and buffers (no copies of your buffers).

Run: ``python examples/bring_your_own_wgpu_device.py`` (needs ``tensorferry[webgpu]``).
"""

from __future__ import annotations

import numpy as np
import wgpu

import tensorferry as tf
import tensorferry_webgpu as tfw


def main() -> None:
    """Adopt a wgpu device, wrap one of its buffers, upload into it, read it back."""
    adapter = tfw.adapters()[0]  # tensorferry's enumeration: never enumerate twice
    my_device = adapter.request_device_sync()
    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
    my_buffer = my_device.create_buffer(size=1024 * 4, usage=usage)
    with tf.Environment() as env:
        device = tfw.adopt_device(env, my_device)  # copies run on your queue
        tensor = tfw.wrap_buffer(env, device, my_buffer, (1024,), np.float32)
        env.copy_tensor(env.from_numpy(np.arange(1024, dtype=np.float32)), tensor)
        # Your compute passes can use my_buffer now; here we read it with wgpu itself.
        raw = np.frombuffer(my_device.queue.read_buffer(my_buffer), dtype=np.float32)
        np.testing.assert_array_equal(raw, np.arange(1024, dtype=np.float32))
        buffer, offset = tfw.buffer_of(tensor[512:])
        print(f"{device}: the second half starts at byte {offset} of {buffer.size}")
    my_buffer.destroy()  # yours to destroy, after tensorferry is done with it


if __name__ == "__main__":
    main()
