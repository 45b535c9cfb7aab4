"""The ECG encoder of a bundle for many records at once: large batches, pinned host memory, and
on CUDA a compiled bfloat16 encoder.

``predict`` over directories, ``embed`` and ``split_embeddings.embed_split`` hand their records to
:class:`FastEncoder`. On the CPU it is the bundle's own ``embed`` batch by batch, so its
embeddings are those of ``Bundle.embed`` to the bit; on CUDA each batch is read into one of a few
pinned buffers while the GPU encodes the one before, copied to the device without a wait, and
encoded by a ``torch.compile``d encoder of one static shape (a short last batch is padded, its
padding rows dropped), under bfloat16 autocast.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ecgtool.bundle import Bundle
from ecgtool.store import ShardRows

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
