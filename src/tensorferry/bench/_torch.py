"""torch CUDA peers: pageable and pinned host memory, the numbers GPU users know."""

from __future__ import annotations

from typing import Any

from ._path import Case, FunctionCase, PathUnavailableError
from ._suites import check_decode_inputs, decode_inputs, decode_poison
from ._workload import POISON_BYTE, HostData, Op, Workload

__all__ = ["TorchPath"]


class TorchPath:
    """``Tensor.copy_`` between host and CUDA tensors, then ``torch.cuda.synchronize()``.

    ``pinned=False`` copies from and into the benchmark's own (pageable) numpy
    arrays through ``torch.from_numpy``; ``pinned=True`` copies page-locked host
    tensors with ``non_blocking=True``, the fastest a host copy gets. Device
    tensors are allocated once per case, so allocation is not timed. Raises
    :class:`PathUnavailableError` without torch or without a CUDA device.
    """

    def __init__(self, *, pinned: bool) -> None:
        try:
            import torch
        except ImportError as exc:
            raise PathUnavailableError(f"torch is not importable ({exc})") from exc
        if not torch.cuda.is_available():
            raise PathUnavailableError("torch finds no CUDA device")
        self._torch: Any = torch
        self._pinned = pinned
        self.name = "torch-cuda-pinned" if pinned else "torch-cuda"
        self.device_name = str(torch.cuda.get_device_name())

    def describe(self, op: Op) -> str | None:
        """The torch calls for ``op``; device -> device and downloads into new host
        memory are measured by the pageable path only."""
        memory = "pinned host tensors, copy_(non_blocking=True)" if self._pinned else "copy_"
        match op:
            case Op.H2H:
                return None
            case Op.D2D | Op.BATCH_D2D:
                return None if self._pinned else "cuda tensor copy_ + synchronize"
            case Op.DOWNLOAD_NEW:
                return None if self._pinned else "cuda_tensor.cpu() (new pageable memory)"
            case Op.DECODE_STEP | Op.DECODE_STEP_BATCHED:
                return f"{memory} of each input, then of the logits, + torch.cuda.synchronize()" + (
                    "" if op is Op.DECODE_STEP else " (torch has no batched copy)"
                )
            case Op.MODEL_LOAD:
                how = (
                    ".to('cuda', non_blocking=True) from pinned" if self._pinned else ".to('cuda')"
                )
                return f"{how} per tensor, one synchronize"
            case Op.MODEL_LOAD_EXISTING:
                return f"{memory} per tensor, one synchronize"
            case Op.BATCH_UPLOAD | Op.BATCH_DOWNLOAD:
                return f"a loop of {memory}, one synchronize"
            case _:
                return f"{memory} + torch.cuda.synchronize()"

    def _host(self, array: Any) -> Any:
        """A host tensor over ``array`` (pageable) or a pinned copy of it."""
        torch = self._torch
        if not self._pinned:
            return torch.from_numpy(array)
        pinned = torch.empty(array.shape, dtype=torch.from_numpy(array).dtype, pin_memory=True)
        pinned.numpy()[...] = array
        return pinned

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """Host tensors over (or copied from) ``data`` and fresh CUDA tensors."""
        if workload.op in (Op.DECODE_STEP, Op.DECODE_STEP_BATCHED):
            return self._decode_step(data)
        if workload.op in (Op.MODEL_LOAD, Op.MODEL_LOAD_EXISTING):
            return self._model_load(workload, data)
        torch = self._torch
        count, nbytes = workload.count, workload.nbytes
        if self._pinned:
            host_source = torch.empty((count, nbytes), dtype=torch.uint8, pin_memory=True)
            host_source.numpy()[...] = data.source
            host_destination = torch.empty((count, nbytes), dtype=torch.uint8, pin_memory=True)
        else:
            host_source = torch.from_numpy(data.source)
            host_destination = torch.from_numpy(data.destination)
        non_blocking = self._pinned

        def fresh() -> list[Any]:
            return [torch.empty(nbytes, dtype=torch.uint8, device="cuda") for _ in range(count)]

        def filled() -> list[Any]:
            return [host_source[i].to("cuda") for i in range(count)]

        def copy_all(sources: list[Any], targets: list[Any]) -> None:
            for source, target in zip(sources, targets, strict=True):
                target.copy_(source, non_blocking=non_blocking)
            torch.cuda.synchronize()

        def check_device(targets: list[Any]) -> None:
            data.check(torch.stack(targets).cpu().numpy(), self.name)

        def check_host() -> None:
            data.check(host_destination.numpy(), self.name)

        host_rows = list(host_source)
        out_rows = list(host_destination)
        match workload.op:
            case Op.UPLOAD | Op.BATCH_UPLOAD:
                targets = fresh()

                def run() -> None:
                    copy_all(host_rows, targets)

                def verify() -> None:
                    for target in targets:
                        target.fill_(POISON_BYTE)
                    run()
                    check_device(targets)

            case Op.DOWNLOAD | Op.BATCH_DOWNLOAD:
                sources = filled()

                def run() -> None:
                    copy_all(sources, out_rows)

                def verify() -> None:
                    host_destination.fill_(POISON_BYTE)
                    run()
                    check_host()

            case Op.D2D | Op.BATCH_D2D:
                sources, targets = filled(), fresh()

                def run() -> None:
                    copy_all(sources, targets)

                def verify() -> None:
                    for target in targets:
                        target.fill_(POISON_BYTE)
                    run()
                    check_device(targets)

            case Op.ROUNDTRIP:
                (target,) = fresh()

                def run() -> None:
                    target.copy_(host_rows[0], non_blocking=non_blocking)
                    out_rows[0].copy_(target, non_blocking=non_blocking)
                    torch.cuda.synchronize()

                def verify() -> None:
                    target.fill_(POISON_BYTE)
                    host_destination.fill_(POISON_BYTE)
                    run()
                    check_host()

            case Op.DOWNLOAD_NEW:
                (source,) = filled()
                return FunctionCase(
                    run=source.cpu, verify=lambda: data.check(source.cpu().numpy(), self.name)
                )
            case _:
                raise ValueError(f"{self.name} does not measure {workload.op}")
        return FunctionCase(run=run, verify=verify)

    def _decode_step(self, data: HostData) -> Case:
        """Each input copied up, then the logits down, then one synchronize."""
        torch = self._torch
        non_blocking = self._pinned
        inputs = decode_inputs(data)
        host_inputs = [self._host(value) for value in inputs]
        device_inputs = [torch.empty((1, 1), dtype=torch.int64, device="cuda") for _ in inputs]
        logits = torch.from_numpy(data.source.view("float32")).to("cuda")  # [1, DECODE_VOCAB]
        out = self._host(data.destination.view("float32"))
        pairs = list(zip(host_inputs, device_inputs, strict=True))

        def run() -> None:
            for host, on_device in pairs:
                on_device.copy_(host, non_blocking=non_blocking)
            out.copy_(logits, non_blocking=non_blocking)
            torch.cuda.synchronize()

        def verify() -> None:
            poisoned = torch.from_numpy(decode_poison()).to("cuda")
            for on_device in device_inputs:
                on_device.copy_(poisoned)
            out.view(torch.uint8).fill_(POISON_BYTE)
            run()
            check_decode_inputs([t.cpu().numpy() for t in device_inputs], inputs, self.name)
            data.check(out.numpy().view("uint8"), self.name)

        return FunctionCase(run=run, verify=verify)

    def _model_load(self, workload: Workload, data: HostData) -> Case:
        """``.to("cuda")`` of every tensor (or ``copy_`` into existing ones), one synchronize."""
        torch = self._torch
        non_blocking = self._pinned
        host = self._host(data.source[0])
        sources = list(torch.split(host, list(workload.parts)))
        existing = (
            [torch.empty(n, dtype=torch.uint8, device="cuda") for n in workload.parts]
            if workload.op is Op.MODEL_LOAD_EXISTING
            else []
        )

        def run() -> list[Any]:
            if existing:
                for source, target in zip(sources, existing, strict=True):
                    target.copy_(source, non_blocking=non_blocking)
                targets = existing
            else:
                targets = [s.to("cuda", non_blocking=non_blocking) for s in sources]
            torch.cuda.synchronize()
            return targets

        def verify() -> None:
            for target in existing:
                target.fill_(POISON_BYTE)
            data.check(torch.cat(run()).cpu().numpy(), self.name)

        return FunctionCase(run=run, verify=verify)

    def close(self) -> None:
        """Return cached CUDA memory to the driver."""
        self._torch.cuda.empty_cache()
