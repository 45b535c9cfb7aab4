"""The ECG encoder of a bundle for many records at once: large batches, pinned host memory, and
on CUDA a compiled bfloat16 encoder.

``predict`` over directories, ``bench`` and ``evaluate.embed_split`` hand their records to
:class:`FastEncoder`. On the CPU it is the bundle's own ``embed`` batch by batch, so its
embeddings are those of ``Bundle.embed`` to the bit; on CUDA each batch is read into one of a few
pinned buffers while the GPU encodes the one before, copied to the device without a wait, and
encoded by a ``torch.compile``d encoder of one static shape (a short last batch is padded, its
padding rows dropped), under bfloat16 autocast.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ecgtool.bundle import Bundle

READERS = 4  # threads filling pinned buffers (a store's rows are read with os.preadv, which frees the GIL)


class _Embedder(torch.nn.Module):
    """Encoder, projection, normalisation: ``Bundle.embed`` as one module to compile."""

    def __init__(self, bundle: Bundle, autocast_dtype: torch.dtype | None, device_type: str):
        super().__init__()
        self.encoder, self.projection = bundle.encoder, bundle.projection
        self.autocast_dtype, self.device_type = autocast_dtype, device_type

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            features = self.projection(self.encoder(signals.float()))
        return torch.nn.functional.normalize(features.float(), dim=-1)


def _choice(value: str | bool, device: torch.device, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value not in ("auto", "on", "off"):
        raise ValueError(f"{name} must be auto, on or off, got {value!r}")
    return value == "on" or (value == "auto" and device.type == "cuda")


class FastEncoder:
    """Unit ECG embeddings of many records through a bundle's encoder.

    Parameters
    ----------
    bundle : Bundle
        Moved to ``device``.
    device : torch.device
    batch_size : int
        Records per forward pass (1024 suits a GPU; the CPU gains nothing above ~64).
    compile : {"auto", "on", "off"} or bool
        ``torch.compile`` the encoder for batches of ``batch_size`` (auto: on CUDA only).
    bf16 : {"auto", "on", "off"} or bool
        bfloat16 autocast (auto: on CUDA only). Embeddings come back as float32 either way.
    """

    def __init__(self, bundle: Bundle, device: torch.device | str = "cpu", batch_size: int = 1024,
                 compile: str | bool = "auto", bf16: str | bool = "auto"):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.bundle = bundle.to(self.device)
        self.compiled = _choice(compile, self.device, "compile")
        self.bf16 = _choice(bf16, self.device, "bf16")
        embedder = _Embedder(bundle, torch.bfloat16 if self.bf16 else None, self.device.type).eval()
        self._forward = torch.compile(embedder, dynamic=False) if self.compiled else embedder
        self._pinned = self.device.type == "cuda"

    @torch.inference_mode()
    def _encode_on_device(self, signals: torch.Tensor) -> torch.Tensor:
        n = signals.shape[0]
        if self.compiled and n < self.batch_size:
            # One static shape: pad, then drop the padding rows (eval mode: rows do not mix).
            signals = torch.cat([signals, signals.new_zeros((self.batch_size - n, *signals.shape[1:]))])
        if not self.compiled and not self.bf16 and self.device.type == "cpu":
            return self.bundle.embed(signals.float())  # the reference path, to the bit
        return self._forward(signals)[:n]

    def encode_batches(self, batches: Iterable[np.ndarray | torch.Tensor]) -> Iterator[torch.Tensor]:
        """Embeddings ``(len(batch), d)`` on the device, one per batch of ``batches`` (each at
        most ``batch_size`` records, ``(B, leads, samples)`` in mV, any float dtype)."""
        if not self._pinned:
            for batch in batches:
                yield self._encode_on_device(torch.as_tensor(np.asarray(batch)).to(self.device))
            return
        for pinned, n, release in _pinned_batches(batches, self.batch_size):
            on_device = pinned[:n].to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
            yield self._encode_on_device(on_device)
            copied.synchronize()  # the pinned buffer may be refilled once its copy is done
            release(pinned)

    def encode(self, signals: np.ndarray | torch.Tensor | Iterable[np.ndarray]) -> np.ndarray:
        """Float32 embeddings ``(N, d)`` on the host, in input order, of an ``(N, leads,
        samples)`` array or of an iterable of such batches."""
        batches = signals
        if isinstance(signals, (np.ndarray, torch.Tensor)):
            batches = (signals[start:start + self.batch_size] for start in range(0, len(signals), self.batch_size))
        parts = list(self.encode_batches(batches))
        if not parts:
            return np.zeros((0, self.bundle.projection.out_features), dtype=np.float32)
        return torch.cat(parts).float().cpu().numpy()


class ShardRows:
    """Rows ``start:stop`` of one shard's ``signal``, read when asked, into a given array.

    A store writes each record as one uncompressed chunk: their byte offsets in the file are read
    once per shard, and a batch is read with ``os.preadv`` straight into its destination (a
    pinned buffer), runs of adjacent chunks in one call, without HDF5 and without holding the GIL.
    Any other layout is read through h5py.
    """

    def __init__(self, path: str | Path, start: int, stop: int, row_shape: tuple[int, ...], dtype: np.dtype,
                 offsets: np.ndarray | None):
        self.path, self.start, self.stop = str(path), start, stop
        self.shape = (stop - start, *row_shape)
        self.dtype = np.dtype(dtype)
        self.offsets = offsets

    def __len__(self) -> int:
        return self.shape[0]

    def read_into(self, out: np.ndarray) -> None:
        if out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.path}: rows {self.start}:{self.stop} need a C-contiguous {self.dtype} array of {self.shape}")
        if self.offsets is None:
            import h5py

            with h5py.File(self.path, "r") as shard:
                shard["signal"].read_direct(out, np.s_[self.start:self.stop])
            return
        row_bytes = out[0].nbytes if len(out) else 0
        flat = out.reshape(len(out), -1).view(np.uint8)
        offsets = self.offsets[self.start:self.stop]
        breaks = np.flatnonzero(np.diff(offsets) != row_bytes) + 1
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            for run in np.split(np.arange(len(offsets)), breaks):
                if not len(run):
                    continue
                view = memoryview(flat[run[0]:run[-1] + 1]).cast("B")
                position, done = int(offsets[run[0]]), 0
                while done < len(view):
                    read = os.preadv(descriptor, [view[done:]], position + done)
                    if read <= 0:
                        raise OSError(f"{self.path}: ended inside record {self.start + run[0]}'s samples")
                    done += read
        finally:
            os.close(descriptor)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        self.read_into(out)
        return out if dtype is None else out.astype(dtype)


def _chunk_offsets(signal) -> np.ndarray | None:
    """Each row's byte offset in the file when ``signal`` is stored as one unfiltered chunk per
    row (as ``ecgtool ingest`` writes it), else None."""
    if signal.chunks != (1, *signal.shape[1:]) or signal.id.get_create_plist().get_nfilters() or not hasattr(signal.id, "chunk_iter"):
        return None
    offsets = np.full(signal.shape[0], -1, dtype=np.int64)
    row_bytes = int(np.prod(signal.shape[1:])) * signal.dtype.itemsize

    def take(info):
        if info.size == row_bytes:
            offsets[info.chunk_offset[0]] = info.byte_offset

    signal.id.chunk_iter(take)
    return None if (offsets < 0).any() else offsets


def store_batches(paths: Iterable[str | Path], batch_size: int) -> Iterator[ShardRows]:
    """Each shard's samples, ``batch_size`` records at a time, as stored (float16): read when
    consumed (``np.asarray(rows)``, or ``rows.read_into(array)``)."""
    import h5py

    for path in paths:
        with h5py.File(path, "r") as shard:
            signal = shard["signal"]
            shape, dtype, offsets = signal.shape, signal.dtype, _chunk_offsets(signal)
        for start in range(0, shape[0], batch_size):
            yield ShardRows(path, start, min(start + batch_size, shape[0]), shape[1:], dtype, offsets)


def _pinned_batches(batches: Iterable, batch_size: int, readers: int = READERS):
    """``(pinned buffer, rows, release)`` per batch, in order, while threads fill the next ones.

    A batch is an array, a tensor or :class:`ShardRows` (read straight into the buffer). The
    consumer calls ``release(buffer)`` once the GPU has copied it, so that it can be refilled."""
    free: list[torch.Tensor] = []

    def buffer_for(shape, dtype) -> torch.Tensor:
        torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype if isinstance(dtype, np.dtype) else dtype
        for i, buffer in enumerate(free):
            if buffer.shape[1:] == tuple(shape[1:]) and buffer.dtype == torch_dtype:
                return free.pop(i)
        return torch.empty((batch_size, *shape[1:]), dtype=torch_dtype).pin_memory()

    def fill(buffer: torch.Tensor, batch) -> tuple[torch.Tensor, int]:
        n = len(batch)
        if isinstance(batch, ShardRows):
            batch.read_into(buffer.numpy()[:n])
        else:
            buffer[:n].copy_(torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch))
        return buffer, n

    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="ecgtool-reader") as pool:
        pending: deque = deque()
        source = iter(batches)
        exhausted = False
        while True:
            while not exhausted and len(pending) < readers + 1:
                batch = next(source, None)
                if batch is None:
                    exhausted = True
                    break
                if len(batch) > batch_size:
                    raise ValueError(f"a batch of {len(batch)} records is larger than the batch size {batch_size}")
                dtype = batch.dtype
                pending.append(pool.submit(fill, buffer_for(batch.shape, dtype), batch))
            if not pending:
                return
            buffer, n = pending.popleft().result()
            yield buffer, n, free.append


def encode(bundle: Bundle, signals, device: torch.device | str = "cpu", batch_size: int = 1024,
           compile: str | bool = "auto", bf16: str | bool = "auto") -> np.ndarray:
    """:meth:`FastEncoder.encode` in one call."""
    return FastEncoder(bundle, device, batch_size, compile, bf16).encode(signals)
