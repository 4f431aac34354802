"""The CUDA backend's sources compile and link with nvcc and the pinned torch (no GPU needed).

The build goes to the per-user extension cache, so ninja recompiles only when a source or flag
changed since the last build there; a fresh machine (CI) compiles from scratch (about 1.5 minutes of
CPU time; longer in wall time on a busy 2-core machine). Where a GPU is present, the kernels are also
compared with the reference backend.
"""

from __future__ import annotations

import time

import pytest
import torch

import stylegan2_ops as ops
from stylegan2_ops import build


def test_cuda_backend_compiles_and_links():
    try:
        build.find_nvcc()
    except build.BuildError as exc:
        pytest.skip(f"cannot test the CUDA build: {exc}")
    start = time.perf_counter()
    lib = build.load.__wrapped__("cuda")  # bypass the in-process cache: really run the build step
    print(f"CUDA backend built and loaded in {time.perf_counter() - start:.0f} s ({build.build_dir('cuda')})")
    for name in ("bias_act_forward", "bias_act_backward", "upfirdn2d"):
        assert callable(getattr(lib, name))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_backend_matches_ref_on_gpu():
    torch.manual_seed(0)
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 3, 9, 7, device="cuda")
    for kwargs in (
        dict(up=2, padding=ops.up_padding(f, 2), gain=4),
        dict(down=2, padding=ops.down_padding(f, 2)),
        dict(up=(1, 3), down=(2, 1), padding=(-1, 2, 3, 0), flip_filter=True),
    ):
        torch.testing.assert_close(
            ops.upfirdn2d(x, f.cuda(), backend="cuda", **kwargs),
            ops.upfirdn2d(x, f.cuda(), backend="ref", **kwargs),
            rtol=1e-4,
            atol=1e-5,
        )
    b = torch.randn(3, device="cuda")
    for act in ops.ref.ACTIVATIONS:
        torch.testing.assert_close(
            ops.bias_act(x, b, act=act, clamp=0.9, backend="cuda"),
            ops.bias_act(x, b, act=act, clamp=0.9, backend="ref"),
            rtol=1e-4,
            atol=1e-5,
        )
    xd = torch.randn(1, 2, 5, 4, device="cuda", dtype=torch.float64, requires_grad=True)
    bd = torch.randn(2, device="cuda", dtype=torch.float64, requires_grad=True)
    fd = f.double().cuda()
    assert torch.autograd.gradgradcheck(
        lambda a: ops.upfirdn2d(a, fd, up=2, down=1, padding=(2, 1, 2, 1), backend="cuda"), (xd,)
    )
    assert torch.autograd.gradgradcheck(lambda a, c: ops.bias_act(a, c, act="swish", backend="cuda"), (xd, bd))
