"""What a run's figures depend on besides the config and the seed, recorded in summary.json.

On one machine a fixed seed reproduces every figure bit for bit; across machines it need not:
floating-point results depend on the CPU kernels torch picks for the instruction set
(`cpu_capability`: AVX2, AVX512...), the number of threads (it changes reduction order), and the
torch / transformers / accelerate versions. Two runs are comparable figure for figure only when
this block matches.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Library versions, thread count and CPU kernel family of this process."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "accelerate": _version("accelerate"),
        "torch_num_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": sys.platform,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
    }
