"Part I's `chadgpt.lecture` and its bridge to the engine: `GPT.from_lecture` gives the lecture model's logits."
import subprocess, sys
import pytest, torch
from chadgpt.core import ChadGPTError
from chadgpt.lecture import GPTLanguageModel, CharTokenizer, get_batch, estimate_loss, train, sample, next_token
from chadgpt.model import GPT, GPTConfig, sample_next

SHAPES = [  # vocab_size, n_embed, n_head, n_layer, block_size
    (65, 384, 6, 6, 256), (65, 64, 4, 2, 32), (2, 8, 1, 1, 1), (101, 24, 3, 4, 17), (50257, 16, 2, 1, 8), (30, 96, 12, 3, 9)]

@pytest.mark.parametrize('shape', SHAPES)
def test_from_lecture_logits(shape):
    V, C, nh, L, T = shape
    torch.manual_seed(sum(shape))
    lec = GPTLanguageModel(V, C, nh, L, T, dropout=0.1).eval()
    for p in lec.parameters(): p.data.normal_(0, 0.2)
    eng = GPT.from_lecture(lec)
    assert not eng.training
    assert (eng.config.n_layer, eng.config.n_head, eng.config.n_embed, eng.config.block_size, eng.config.vocab_size) == (L, nh, C, T, V)
    assert eng.num_params() == sum(p.numel() for p in lec.parameters())
    idx = torch.randint(V, (2, T))
    with torch.no_grad():
        for t in sorted({1, max(1, T // 2), T}):
            torch.testing.assert_close(eng(idx[:, :t])[0], lec(idx[:, :t])[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(eng(idx, idx)[1], lec(idx, idx)[1], atol=1e-5, rtol=0)

def test_from_lecture_copies_and_keeps_mode():
    lec = GPTLanguageModel(65, 32, 4, 2, 16, dropout=0.0)           # training mode, as constructed
    eng = GPT.from_lecture(lec)
    assert eng.training and eng.config.dropout == 0.0
    with torch.no_grad(): lec.lm_head.bias.add_(1.0)                  # the engine holds copies, not the same tensors
    assert not torch.equal(eng.lm_head.bias, lec.lm_head.bias)
    assert eng.lm_head.bias is not None and eng.lm_head.weight.data_ptr() != eng.token_embedding.weight.data_ptr()

def test_from_lecture_trained_model_generates_the_same():
    torch.manual_seed(0)
    data = torch.randint(20, (2000,))
    lec = GPTLanguageModel(20, 32, 2, 2, 16)
    train(lec, {'train': data, 'val': data}, block_size=16, batch_size=4, max_iters=5, eval_interval=5, eval_iters=1)
    lec.eval(); eng = GPT.from_lecture(lec)
    start = torch.zeros((2, 1), dtype=torch.long)
    torch.manual_seed(3); a = lec.generate(start, 40)                 # runs past block_size by cropping
    torch.manual_seed(3); b = eng.generate(start, 40)
    assert torch.equal(a, b)

def test_from_lecture_refuses_heads_that_do_not_fill_n_embed():
    with pytest.raises(ChadGPTError, match="do not make n_embed 10"):
        GPT.from_lecture(GPTLanguageModel(65, n_embed=10, n_head=3, n_layer=1, block_size=4))

def test_lecture_preset_unchanged():
    c = GPTConfig.from_preset('lecture')
    assert (c.activation, c.tie_weights, c.head_bias) == ('gelu', True, False)
    assert GPT(GPTConfig(head_bias=True, tie_weights=False, activation='relu')).lm_head.bias is not None
    with pytest.raises(ChadGPTError, match="activation must be gelu, relu or relu2"): GPTConfig(activation='tanh')

def test_lecture_imports_nothing_from_the_engine():
    out = subprocess.run([sys.executable, '-c', "import sys, chadgpt.lecture; print(*sorted(m for m in sys.modules if m.startswith('chadgpt')))"],
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert [m for m in out if not m.startswith('chadgpt.lecture')] == ['chadgpt']

def test_lecture_pieces():
    tok = CharTokenizer("hello world")
    assert tok.decode(tok.encode("hello")) == "hello" and tok.vocab_size == 8
    data = torch.arange(100)
    x, y = get_batch(data, 8, 4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 8) and torch.equal(x + 1, y)
    lg = torch.randn(3, 50)
    for kw in ({}, {'temperature': 0.5, 'top_k': 4}, {'top_p': 0.7}, {'temperature': 0}):
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        assert torch.equal(next_token(lg, **kw, generator=g1), sample_next(lg, **kw, generator=g2))
    m = GPTLanguageModel(8, 16, 2, 1, 4).eval()
    assert sample(m, torch.zeros((1, 1), dtype=torch.long), 10, temperature=0).shape == (1, 11)
    losses = estimate_loss(m, {'train': data % 8, 'val': data % 8}, 4, 2, eval_iters=2)
    assert set(losses) == {'train', 'val'}
