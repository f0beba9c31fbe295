"""GPT-2's seven-operation gelu_new swapped for torch's one-kernel tanh GELU: same function, same checkpoint."""

import json

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers.activations import GELUTanh, NewGELUActivation

from rlhfkit.models.fused_activations import use_fused_activations


def _gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_layer=2, n_embd=32, n_head=2, n_positions=16,
                                      activation_function="gelu_new")).eval()


def test_the_swap_keeps_the_function_and_the_checkpoint(tmp_path):
    model = _gpt2()
    ids = torch.randint(0, 64, (3, 10))
    before = model(ids).logits
    assert any(isinstance(m, NewGELUActivation) for m in model.modules())
    use_fused_activations(model)
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    assert sum(isinstance(m, GELUTanh) for m in model.modules()) == 2  # one per block's MLP
    torch.testing.assert_close(model(ids).logits, before, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["activation_function"] == "gelu_new"
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(ids).logits, before, rtol=1e-5, atol=1e-5)


def test_the_gradient_is_the_same_to_rounding():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64, requires_grad=True)
    y = torch.linspace(-6, 6, 1001, dtype=torch.float64, requires_grad=True)
    NewGELUActivation()(x).sum().backward()
    GELUTanh()(y).sum().backward()
    torch.testing.assert_close(y.grad, x.grad)


def test_models_rlhfkit_loads_run_the_fused_kernel(tmp_path):
    from rlhfkit.config.sections import ModelSection
    from rlhfkit.models.load import load_causal_lm
    from rlhfkit.models.tiny import build_tiny_model

    build_tiny_model(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = load_causal_lm(ModelSection(name_or_path=str(tmp_path)), tokenizer, "test")
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
