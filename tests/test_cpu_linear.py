"""The oneDNN small-batch linear path agrees with F.linear (odd shapes, with/without bias)."""

import pytest
import torch
import torch.nn.functional as F

from kernels.cpu_linear import (MAX_ROWS, onednn_linear_available, small_batch_linear, takes_onednn,
                                use_small_batch_linear)

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("shape", [(1, 1, 7), (1, 3, 33), (2, 5, 64), (1, MAX_ROWS, 17), (1, MAX_ROWS + 1, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_default_linear(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    weight = torch.randn(151, shape[-1])
    b = torch.randn(151) if bias else None
    torch.testing.assert_close(small_batch_linear(x, weight, b), F.linear(x, weight, b), atol=1e-4, rtol=1e-4)


def test_other_dtypes_and_gradients_take_the_default_path():
    x = torch.randn(2, 8, dtype=torch.float64)
    weight = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(small_batch_linear(x, weight, None), F.linear(x, weight))
    layer = torch.nn.Linear(8, 4)
    use_small_batch_linear(layer)
    out = layer(torch.randn(3, 8, requires_grad=True))
    out.sum().backward()
    assert layer.weight.grad is not None


def test_model_layers_are_routed_and_agree():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    x = torch.randn(1, 4, 16)
    with torch.no_grad():
        expected = model(x)
        assert use_small_batch_linear(model) == 2
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_inference_takes_onednn_although_parameters_require_grad():
    # A loaded model's parameters keep requires_grad: inference must still take the fast path.
    layer = torch.nn.Linear(16, 32)
    x = torch.randn(1, 4, 16)
    assert layer.weight.requires_grad
    with torch.inference_mode():
        assert takes_onednn(x, layer.weight)
    with torch.no_grad():
        assert takes_onednn(x, layer.weight)
    assert not takes_onednn(x, layer.weight)  # grad mode: autograd records the default path
    assert not takes_onednn(torch.randn(1, MAX_ROWS + 1, 16), layer.weight.detach())
