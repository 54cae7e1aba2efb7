"""Lock-free ring buffers between the audio callback and the rest of the daemon.

Both rings hold float32 frames as ``(frames, channels)`` rows, the layout PortAudio hands the
callback, so a callback copy is one or two contiguous slices. Storage is allocated once; writes
and reads copy into or out of caller-owned arrays and never allocate audio-sized memory.

Why no lock: the audio callback must never wait for a thread that may be descheduled while it
holds a lock. Instead each index has exactly one writer. The producer copies the frames first
and then publishes its new index with one attribute store; the consumer reads that index, copies
the frames, then publishes its own. Under CPython's GIL an attribute store is atomic and the
copy has finished before the store that publishes it, so the reader never sees a published frame
that is not yet written, and the writer never overwrites a frame before it is released. Indices
count frames since the start and never wrap (Python integers do not overflow); the position in
storage is ``index % capacity``.
"""

from __future__ import annotations

import numpy as np


def _check_frames(data: np.ndarray, channels: int, what: str) -> None:
    if data.ndim != 2 or data.shape[1] != channels:
        raise ValueError(f"{what}: expected (frames, {channels}), got {data.shape}")


class RingBuffer:
    """Single-producer, single-consumer FIFO of ``capacity`` frames of ``channels`` channels.

    One thread calls :meth:`write`, one other thread calls :meth:`read` and :meth:`discard`;
    :attr:`available` and :attr:`free` may be read from either. Neither side blocks: a write
    stores what fits, a read returns what is there, and both say how many frames they moved.
    """

    def __init__(self, capacity: int, channels: int) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError(f"need capacity >= 1 and channels >= 1, got {capacity}, {channels}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._buf = np.zeros((self.capacity, self.channels), np.float32)
        self._written = 0  # frames ever written; only the producer stores it
        self._read = 0  # frames ever read; only the consumer stores it

    @property
    def available(self) -> int:
        """Frames written and not yet read."""
        return self._written - self._read

    @property
    def free(self) -> int:
        """Frames that a write can store now."""
        return self.capacity - (self._written - self._read)

    @property
    def written(self) -> int:
        """Frames written since creation (the producer's index)."""
        return self._written

    @property
    def consumed(self) -> int:
        """Frames read or discarded since creation (the consumer's index)."""
        return self._read

    def write(self, data: np.ndarray) -> int:
        """Append up to ``len(data)`` frames of ``data`` ``(frames, channels)`` (any strides,
        e.g. the transpose of a ``(channels, frames)`` block); returns the frames stored, fewer
        when the ring is nearly full."""
        _check_frames(data, self.channels, "RingBuffer.write")
        start = self._written
        n = min(len(data), self.capacity - (start - self._read))
        if n <= 0:
            return 0
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos:pos + first] = data[:first]
        if n > first:
            self._buf[:n - first] = data[first:n]
        self._written = start + n  # publish only after the frames are in place
        return n

    def read(self, out: np.ndarray) -> int:
        """Move up to ``len(out)`` frames into ``out`` ``(frames, channels)``, oldest first;
        returns the frames moved (``out[moved:]`` is left untouched)."""
        _check_frames(out, self.channels, "RingBuffer.read")
        start = self._read
        n = min(len(out), self._written - start)
        if n <= 0:
            return 0
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos:pos + first]
        if n > first:
            out[first:n] = self._buf[:n - first]
        self._read = start + n  # release the frames only after they are copied out
        return n

    def discard(self, frames: int | None = None) -> int:
        """Drop up to ``frames`` of the oldest frames (all of them by default), consumer side;
        returns the frames dropped."""
        n = self._written - self._read
        n = n if frames is None else max(0, min(n, frames))
        self._read += n
        return n


class CaptureRing:
    """The most recent ``capacity`` frames of a stream, addressable by absolute sample index
    and by stream time.

    One writer (the audio callback) appends chunks with :meth:`write`, each with the stream
    time (seconds, the back-end's clock) of its first frame. Any number of non-real-time
    readers copy ranges with :meth:`read`; nothing waits for them, so a reader that falls
    more than ``capacity`` frames behind loses the oldest frames, and :meth:`read` says so.
    Chunk start indices and times are kept in a table of ``max_chunks`` entries, enough to map
    a time to a sample index over the whole ring when chunks are at least
    ``capacity / max_chunks`` frames long.
    """

    def __init__(self, capacity: int, channels: int, samplerate: float,
                 max_chunks: int = 4096) -> None:
        if capacity < 1 or channels < 1 or max_chunks < 1 or samplerate <= 0:
            raise ValueError("CaptureRing needs capacity, channels, max_chunks >= 1 and "
                             "samplerate > 0")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self.samplerate = float(samplerate)
        self._buf = np.zeros((self.capacity, self.channels), np.float32)
        self._chunk_index = np.zeros(max_chunks, np.int64)  # first sample index of each chunk
        self._chunk_time = np.zeros(max_chunks, np.float64)  # its stream time in seconds
        self._chunks = 0
        self._end = 0  # frames ever written: the index the next frame gets
        # End of the chunk being written, published before its frames are stored: a reader
        # that checks it after copying knows whether the writer touched its range meanwhile.
        self._reserved = 0

    @property
    def end(self) -> int:
        """Absolute index of the next frame to be written (= frames written so far)."""
        return self._end

    @property
    def start(self) -> int:
        """Absolute index of the oldest frame still held."""
        return max(0, self._end - self.capacity)

    @property
    def start_safe(self) -> int:
        """Oldest index that the chunk being written (if any) cannot overwrite."""
        return max(0, self._reserved - self.capacity)

    def write(self, data: np.ndarray, time: float) -> None:
        """Append ``data`` ``(frames, channels)`` whose first frame was captured at stream time
        ``time`` (seconds). Callback side: copies only."""
        _check_frames(data, self.channels, "CaptureRing.write")
        n = len(data)
        if n == 0:
            return
        start = self._end
        if n > self.capacity:  # only the newest frames fit
            data, start, time = data[n - self.capacity:], start + n - self.capacity, \
                time + (n - self.capacity) / self.samplerate
            n = self.capacity
        self._reserved = start + n
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos:pos + first] = data[:first]
        if n > first:
            self._buf[:n - first] = data[first:n]
        slot = self._chunks % len(self._chunk_index)
        self._chunk_index[slot] = start
        self._chunk_time[slot] = time
        self._chunks += 1
        self._end = start + n

    def read(self, start: int, out: np.ndarray) -> bool:
        """Copy frames ``[start, start + len(out))`` into ``out`` ``(frames, channels)``.
        Returns False, with ``out`` unspecified, when part of the range is not written yet or
        was overwritten (before or during the copy)."""
        _check_frames(out, self.channels, "CaptureRing.read")
        n = len(out)
        if start < self._reserved - self.capacity or start + n > self._end:
            return False
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos:pos + first]
        if n > first:
            out[first:] = self._buf[:n - first]
        # The writer may have started overwriting the range while we copied: check after.
        return start >= self._reserved - self.capacity

    def index_at(self, time: float) -> int:
        """Absolute sample index captured at stream time ``time`` (seconds): counted from the
        newest chunk that started at or before ``time`` (the oldest one kept if none did), at
        :attr:`samplerate`. Reader side (allocates)."""
        count = min(self._chunks, len(self._chunk_index))
        if count == 0:
            return 0
        order = (np.arange(self._chunks - count, self._chunks) % len(self._chunk_index))
        times, indices = self._chunk_time[order], self._chunk_index[order]
        k = max(0, int(np.searchsorted(times, time, side="right")) - 1)
        return int(indices[k] + round((time - times[k]) * self.samplerate))

    def time_at(self, index: int) -> float:
        """Stream time (seconds) at which sample ``index`` was (or will be) captured: the
        inverse of :meth:`index_at`. Reader side (allocates)."""
        count = min(self._chunks, len(self._chunk_index))
        if count == 0:
            return index / self.samplerate
        order = (np.arange(self._chunks - count, self._chunks) % len(self._chunk_index))
        times, indices = self._chunk_time[order], self._chunk_index[order]
        k = max(0, int(np.searchsorted(indices, index, side="right")) - 1)
        return float(times[k] + (index - indices[k]) / self.samplerate)


class CaptureReader:
    """A sequential reader of a :class:`CaptureRing` with its own position (one per consumer:
    the model's input path, the input recorder). Frames the ring overwrote before this reader
    got to them are skipped and counted in :attr:`lost`."""

    def __init__(self, ring: CaptureRing, start: int | None = None) -> None:
        self.ring = ring
        self.position = ring.end if start is None else int(start)
        self.lost = 0

    def read(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` new frames into ``out`` ``(frames, channels)``; returns how
        many."""
        for _ in range(3):  # retried only when the writer laps us mid-copy
            oldest = self.ring.start_safe
            if self.position < oldest:
                self.lost += oldest - self.position
                self.position = oldest
            n = min(len(out), self.ring.end - self.position)
            if n <= 0:
                return 0
            if self.ring.read(self.position, out[:n]):
                self.position += n
                return n
        return 0
