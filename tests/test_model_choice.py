"""`--model auto`: the embedded model a machine runs by default, and the reason given."""

from completion.embedded import DEFAULT_MODEL
from completion.model_choice import LARGE_MODEL, choose_model
from completion.models import resolve_model

GIB = 1 << 30


def test_cpus_and_apple_gpus_run_the_small_model_even_with_the_large_one_installed():
    for device in ("cpu", "mps"):
        choice = choose_model(device, large_installed=True)
        assert choice.name == DEFAULT_MODEL
        assert "3x slower" in choice.reason


def test_a_cuda_gpu_with_room_runs_the_large_model_when_it_is_installed():
    choice = choose_model("cuda", 40 * GIB, large_installed=True)
    assert choice.name == LARGE_MODEL and "CUDA GPU" in choice.reason


def test_a_cuda_gpu_without_the_large_model_says_how_to_install_it():
    choice = choose_model("cuda", 40 * GIB, large_installed=False)
    assert choice.name == DEFAULT_MODEL and "qwen15b" in choice.reason


def test_a_cuda_gpu_short_of_memory_runs_the_small_model():
    choice = choose_model("cuda", 2 * GIB, large_installed=True)
    assert choice.name == DEFAULT_MODEL and "2.0 GiB free" in choice.reason


def test_a_named_model_is_kept_and_auto_resolves_on_this_machine():
    assert resolve_model("/models/x.gguf", "cpu") == "/models/x.gguf"
    assert resolve_model("auto", "cpu") == DEFAULT_MODEL


def test_a_cuda_device_is_chosen_for_by_its_free_memory():
    """Where this torch has no usable CUDA (a CPU build asserts), the device has no room."""
    import torch

    from completion.models import choose_for_device

    choice = choose_for_device("cuda")
    if torch.cuda.is_available():
        assert choice.name == choose_model("cuda", torch.cuda.mem_get_info()[0]).name
    else:
        assert choice.name == DEFAULT_MODEL and "0.0 GiB free" in choice.reason
