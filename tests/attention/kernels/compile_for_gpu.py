"""Compile the attention kernels for NVIDIA targets without a GPU (Triton + its bundled ptxas).

Run as a script in a process *without* ``TRITON_INTERPRET`` (the test does this in a subprocess):
``python tests/attention/kernels/compile_for_gpu.py 90 80 [--dtypes bf16,fp32]``. For each target it
compiles the forward, dK/dV and dQ kernels with every switch on (padding mask, key lengths, causal,
dropout), padded and packed (``VARLEN``), with the first autotuning config of that GPU generation, and checks the shared memory
fits. Prints one line per kernel and exits non-zero on any failure.
"""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from polyfuse.attention.kernels import backward, forward, tuning  # noqa: E402

SHARED_MEMORY_BYTES = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
FLOAT_ARGS = ("qk_scale", "sm_scale", "dropout_p")


def _signature(fn, pointers: dict[str, str], constexprs: dict) -> dict[str, str]:
    return {name: "constexpr" if name in constexprs else pointers.get(name, "fp32" if name in FLOAT_ARGS else "i32")
            for name in fn.arg_names}


def compile_all(capability: int, dtypes: tuple[str, ...] = ("bf16",), head_dim: int = 64) -> int:
    """Number of kernels that failed to compile or do not fit for ``sm_<capability>``."""
    tuning._capability = lambda: (capability // 10, capability % 10)  # choose that generation's configs
    spaces = {"forward": (forward.attention_forward_kernel, tuning.forward_configs()),
              "dkdv": (backward.attention_backward_dkdv_kernel, tuning.key_block_configs()),
              "dq": (backward.attention_backward_dq_kernel, tuning.query_block_configs())}
    failures = 0
    for dtype in dtypes:
        ptr = "*" + dtype
        pointers = dict(Q=ptr, K=ptr, V=ptr, Out=ptr, DOut=ptr, DK=ptr, DV=ptr, DQ=ptr, Lse="*fp32", Delta="*fp32",
                        Mask="*u8", KvLen="*i32", Seed="*i64", CuQ="*i32", CuK="*i32")
        for (name, (kernel, configs)), varlen in ((item, varlen) for item in spaces.items() for varlen in (False, True)):
            config = configs[0]
            constexprs = dict(HEAD_DIM=head_dim, BLOCK_D=head_dim, IS_CAUSAL=True, HAS_MASK=not varlen,
                              HAS_KV_LEN=not varlen, HAS_DROPOUT=True, VARLEN=varlen, UPCAST=False,
                              PRECISION="ieee" if dtype == "fp32" else "tf32", **config.kwargs)
            name = f"{name}{' varlen' if varlen else ''}"
            source = ASTSource(kernel.fn, _signature(kernel.fn, pointers, constexprs), constexprs)
            try:
                compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                          options={"num_warps": config.num_warps, "num_stages": config.num_stages})
            except Exception as error:  # noqa: BLE001 - report every compiler error the same way
                failures += 1
                print(f"sm_{capability} {dtype} {name}: FAILED {str(error)[-400:]}")
                continue
            shared = compiled.metadata.shared
            fits = shared <= SHARED_MEMORY_BYTES[capability]
            failures += not fits
            print(f"sm_{capability} {dtype} {name} {config.kwargs}: shared {shared} B {'ok' if fits else 'TOO LARGE'}")
    return failures


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("capabilities", nargs="*", type=int, default=[90])
    parser.add_argument("--dtypes", default="bf16")
    args = parser.parse_args()
    dtypes = tuple(args.dtypes.split(","))
    sys.exit(1 if sum(compile_all(cap, dtypes) for cap in args.capabilities) else 0)
