"""Generation with the KV cache gives exactly the tokens of the plain (re-run the window) path."""
import pytest, torch
from chadgpt.model import GPT, GPTConfig
from chadgpt.sample import generate_text
from chadgpt.tokenizers import CharTokenizer

def model(attention, block_size=24, seed=0, **kw):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=65, block_size=block_size, n_layer=3, n_head=4, n_embed=32, attention=attention, **kw))
    with torch.no_grad():                       # sharper than at init, so that sampling choices depend on the context
        for p in m.parameters(): p.mul_(3)
    return m.eval()

@pytest.mark.parametrize('attention', ['fused', 'heads'])
@pytest.mark.parametrize('prompt_len,new', [(1, 60), (10, 14), (23, 5), (24, 30), (40, 20)])
def test_greedy_matches(attention, prompt_len, new):
    m = model(attention)
    idx = torch.randint(65, (3, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    assert torch.equal(m.generate(idx, new, temperature=0), m.generate(idx, new, temperature=0, use_cache=False))

@pytest.mark.parametrize('attention', ['fused', 'heads'])
@pytest.mark.parametrize('kw', [{}, {'top_k': 10}, {'top_p': 0.9, 'temperature': 0.7}])
def test_seeded_sampling_matches(attention, kw):
    m = model(attention, seed=1)
    idx = torch.randint(65, (2, 3), generator=torch.Generator().manual_seed(9))
    gen = lambda use_cache: m.generate(idx, 70, generator=torch.Generator().manual_seed(5), use_cache=use_cache, **kw)
    a, b = gen(True), gen(False)
    assert a.shape == (2, 73) and torch.equal(a, b)                         # 70 new tokens: the window slides

def test_stream_text_uses_the_cache_and_matches():
    tok = CharTokenizer.from_text(''.join(chr(40 + i) for i in range(65)))
    m = model('fused')
    calls = []
    h = m.blocks[0].attn.c_attn.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[1]))   # prefill and steps alike
    text = generate_text(m, tok, 'abc', 10, seed=0)
    h.remove()
    assert calls[0] == 3 and set(calls[1:]) == {1}                          # prefill, then one position per token
    assert text == generate_text(m, tok, 'abc', 10, seed=0, use_cache=False)

def test_cache_does_not_leak_between_calls():
    m = model('heads')
    idx = torch.zeros(1, 1, dtype=torch.long)
    first = m.generate(idx, 30, temperature=0)
    assert torch.equal(m.generate(idx, 30, temperature=0), first)
