"""The CPU attention and dropout of the fused path: same distribution and same function as PyTorch's, repeatable."""
import math, pytest, torch
import torch.nn.functional as F
from chadgpt.attention import Dropout, causal_attention, dropout_mask
from chadgpt.model import GPT, GPTConfig
from chadgpt.train import TrainConfig, configure_optimizer, train_step

@pytest.mark.parametrize('p', [0.05, 0.2, 0.5, 0.9])
def test_drop_rate_and_scale(p):
    m = dropout_mask((2000, 1000), p)
    n = m.numel()
    frac = (m == 0).float().mean().item()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n) + 1 / 65536    # five standard deviations, plus the 16-bit step
    assert torch.all((m == 0) | (m == torch.tensor(1 / (1 - p)))).item()

def test_masks_are_independent_of_each_other_and_of_position():
    a, b = dropout_mask((1000, 1000), 0.5), dropout_mask((1000, 1000), 0.5)
    assert abs(((a == 0) & (b == 0)).float().mean().item() - 0.25) < 0.003   # two calls: independent
    rows, cols = (a == 0).float().mean(1), (a == 0).float().mean(0)
    assert rows.std() < 0.03 and cols.std() < 0.03                             # no stripes (std of a mean of 1000: 0.016)
    # neighbours (which share a 64-bit draw) are independent too
    flat = (a == 0).flatten().float()
    assert abs((flat[:-1] * flat[1:]).mean().item() - 0.25) < 0.003

def test_bad_probability():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"): dropout_mask((3,), p)

def test_dropout_module_like_nn_dropout():
    x = torch.randn(3000, 100, requires_grad=True)
    d = Dropout(0.3)
    y = d(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.005
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.7)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.7)
    assert torch.equal(d.eval()(x), x)
    assert Dropout(1.0)(x).eq(0).all()                                         # p=1 falls back to F.dropout

@pytest.mark.parametrize('T', [1, 7, 64])
def test_causal_attention_matches_sdpa(T):
    torch.manual_seed(T)
    q, k, v = (torch.randn(2, 3, T, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = causal_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(ours, ref, atol=1e-10)
    g = torch.randn_like(ours)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)))

def test_causal_attention_bf16_close_to_float32():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 6, 128, 32).unbind(0)
    ref = causal_attention(q, k, v)
    ours = causal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    assert (ours - ref).abs().max() < 0.05

def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embed=32, dropout=0.2, **kw))

@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_training_with_dropout_repeats_under_a_seed(dtype):
    x, y = torch.randint(65, (2, 4, 32), generator=torch.Generator().manual_seed(1))
    def losses(seed):
        m = _model()
        opt = configure_optimizer(m, TrainConfig(), torch.device('cpu'))
        torch.manual_seed(seed)
        return [train_step(m, opt, x, y, torch.device('cpu'), dtype, 1.0).item() for _ in range(4)]
    a, b, c = losses(1), losses(1), losses(2)
    assert a == b and a != c and all(math.isfinite(l) for l in a)

def test_fused_model_equals_heads_model_in_eval():
    fused, heads = _model(attention='fused').eval(), _model(attention='heads').eval()
    for bf, bh in zip(fused.blocks, heads.blocks): bf.attn.copy_from(bh.attn)
    fused.load_state_dict({k: v for k, v in heads.state_dict().items() if '.attn.' not in k}, strict=False)
    idx = torch.randint(65, (3, 32))
    assert torch.allclose(fused(idx)[0], heads(idx)[0], atol=1e-5)
    with torch.autocast('cpu', torch.bfloat16):                                  # the bf16 CPU path: causal_attention
        assert (fused(idx)[0].float() - heads(idx)[0].float()).abs().max() < 0.1
