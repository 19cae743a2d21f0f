"""The Triton packed matmul matches its torch reference for every block format, odd sizes and
1-9 rows; on CPU it runs under TRITON_INTERPRET=1 (set before triton is first imported, so
this file runs the kernel in a child interpreter)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[test]' installs it)")

CHECK = r'''
import torch
from kernels.gguf_blocks import block_format
from kernels.triton_packed import TRITON_FORMATS, packed_matmul, packed_matmul_reference
from tests.test_packed_kernels import random_packed

device = "cuda" if torch.cuda.is_available() else "cpu"
for name in TRITON_FORMATS:
    for rows, out_features, in_features in [(1, 37, 256), (5, 9, 512), (9, 33, 256)]:
        data = random_packed(name, out_features, in_features, seed=rows)
        x = torch.randn(rows, in_features)
        bias = torch.randn(out_features) if rows == 5 else None
        want = packed_matmul_reference(x, data, block_format(name), out_features, bias)
        got = packed_matmul(x.to(device), data.to(device), block_format(name), out_features,
                            None if bias is None else bias.to(device)).cpu()
        torch.testing.assert_close(got, want, atol=3e-4, rtol=1e-4, msg=lambda m: f"{name} {rows}: {m}")
    # rows do not change each other's sums
    data = random_packed(name, 33, 256, seed=7)
    x = torch.randn(6, 256, device=device)
    together = packed_matmul(x, data.to(device), block_format(name), 33)
    alone = packed_matmul(x[2:3].contiguous(), data.to(device), block_format(name), 33)
    assert torch.equal(together[2], alone[0]), name
print("ok", device)
'''


def test_triton_kernel_matches_reference():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")
