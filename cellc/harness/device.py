"""Where a trial trains, and in what precision: ``--device cpu|cuda|auto`` and ``--amp bf16``.

A :class:`Placement` is decided once per command (:func:`resolve_placement`, which turns an unusable
choice into one message) and travels with every job. :meth:`Placement.describe` is what a stored
trial records (``device``, ``device_name``, ``precision``; see :mod:`cellc.harness.record`).

Precision: float32 everywhere by default, as the paper trained. ``--amp bf16`` runs the training and
evaluation forward passes under ``torch.autocast(dtype=bfloat16)``: parameters, optimizer state and the
recurrent state stay float32; torch's own operations (the output layer, the loss, the lowered cuDNN
path) compute in bfloat16 where autocast allows it, and a generated backend's own loops (C++, Triton)
compute in float32 whatever autocast says. It always trains through the autograd loop
(:class:`cellc.harness.train.ReferenceEpoch`), whose backward autocast covers.

Several trial processes may share one GPU (``cellc bench --device cuda --workers N``):
:func:`check_gpu_workers` refuses a count whose measured memory cannot fit.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from cellc.errors import UsageError
from cellc.machine import cpu_model

DEVICE_CHOICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("bf16",)
# What one more process using CUDA costs beyond its tensors: its context, cuBLAS workspace and the caching
# allocator's rounding. A stated allowance (typical of torch 2.x on an H100: 0.5-0.6 GiB), not a measurement.
CUDA_CONTEXT_BYTES = 640 * 2**20
GPU_MEMORY_HEADROOM = 0.9  # workers may use this share of the memory free at start


class Placement(BaseModel):
    """A resolved device (``"cpu"`` or ``"cuda:K"``) and the autocast precision (None: float32)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "cpu"
    amp: Literal["bf16"] | None = None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    @property
    def precision(self) -> str:
        return "float32" if self.amp is None else "bf16 autocast"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's precision context (a no-op at float32)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=torch.bfloat16)

    def noise_generator(self, seed: int, cpu_generator: torch.Generator) -> torch.Generator:
        """The generator of the input noise: on the CPU the trial's own (so a CPU trial draws exactly what it
        drew before devices existed); on a GPU one of that device, seeded alike, so noise is drawn where
        the inputs are (its numbers differ from the CPU's: a GPU trial is reproducible on GPUs)."""
        if not self.is_cuda:
            return cpu_generator
        return torch.Generator(device=self.torch_device).manual_seed(seed)

    def describe(self) -> dict[str, str]:
        """What a trial records about where it ran."""
        return {"device": self.torch_device.type, "device_name": device_name(self.torch_device),
                "precision": self.precision}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def resolve_placement(device: str = "cpu", amp: str | None = None) -> Placement:
    """The placement ``--device`` and ``--amp`` ask for, or a UsageError naming the setting. ``auto`` is the
    first CUDA device where torch sees one, else the CPU."""
    text = (device or "cpu").strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", text):
        raise UsageError(f"--device {device!r}: choose cpu, cuda (or cuda:K) or auto")
    if amp is not None and amp not in AMP_CHOICES:
        raise UsageError(f"--amp {amp!r}: the one mixed precision offered is bf16 (leave --amp out for float32)")
    if text == "auto":
        text = "cuda:0" if torch.cuda.is_available() else "cpu"
    elif text.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
            raise UsageError(f"--device {device}: {why} (torch {torch.__version__}); use --device cpu or auto")
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s) here "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        text = f"cuda:{index}"
    return Placement(device=text, amp=amp)  # type: ignore[arg-type]


def check_gpu_workers(workers: int, per_worker_bytes: float, free_bytes: float, total_bytes: float,
                      name: str, device: str = "cuda:0") -> str:
    """One line stating the memory the trial processes take on a GPU; a UsageError when ``workers`` of them
    (each ``per_worker_bytes``: measured peak tensors + :data:`CUDA_CONTEXT_BYTES`) cannot fit in
    :data:`GPU_MEMORY_HEADROOM` of the memory free now."""
    usable = free_bytes * GPU_MEMORY_HEADROOM
    fits = int(usable // per_worker_bytes) if per_worker_bytes > 0 else workers
    need = workers * per_worker_bytes
    line = (f"{device} ({name}): each trial process takes about {_gib(per_worker_bytes)} (its largest calibrated "
            f"trial's peak plus {_gib(CUDA_CONTEXT_BYTES)} of CUDA context); {workers} worker(s): {_gib(need)} of "
            f"{_gib(free_bytes)} free ({_gib(total_bytes)} in all)")
    if workers > fits:
        raise UsageError(f"--workers {workers}: {line}; at most {max(fits, 0)} fit in "
                         f"{GPU_MEMORY_HEADROOM:.0%} of the free memory (use --workers {max(fits, 1)})")
    return line


def workers_memory_line(placement: Placement, workers: int, peak_bytes: float | None) -> str | None:
    """For a GPU placement: :func:`check_gpu_workers` with the memory free on the device now (None on the
    CPU, where workers are bounded by cores, not memory). ``peak_bytes`` None: not measured (no calibration)."""
    if not placement.is_cuda:
        return None
    if peak_bytes is None:
        return (f"{placement.device} ({device_name(placement.torch_device)}): {max(workers, 1)} trial process(es); "
                "their memory was not measured (no calibration epochs: --no-estimate)")
    free, total = torch.cuda.mem_get_info(placement.torch_device)
    return check_gpu_workers(max(workers, 1), peak_bytes + CUDA_CONTEXT_BYTES, free, total,
                             device_name(placement.torch_device), placement.device)


def _gib(count: float) -> str:
    return f"{count / 2**30:.2f} GiB"
