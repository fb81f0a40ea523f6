"""The modern switches end to end: the rolling KV cache against a banded full pass, and `arch` on the CLI and the REST API."""
import json
import pytest, torch
from conftest import TINY, chadgpt
from chadgpt.api import TrainRequest, request_configs
from chadgpt.model import GPT, GPTCache, GPTConfig
from chadgpt.train import ARCHS, arch_configs, read_json

def rotary_model(block_size=8, n_layer=3, seed=0, **kw):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=65, block_size=block_size, n_layer=n_layer, n_head=2, n_embed=32, **{**ARCHS['modern'][0], **kw}))
    with torch.no_grad():                       # sharper than at init, so that choices depend on the context
        for p in m.parameters(): p.add_(torch.randn_like(p) * 0.3)
    return m.eval()

@pytest.mark.parametrize('prompt_len,new', [(1, 40), (5, 30), (8, 20), (13, 25), (30, 10)])
def test_rolling_cache_is_the_banded_pass(prompt_len, new):
    m = rotary_model()
    idx = torch.randint(65, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    out = m.generate(idx, new, temperature=0)                       # rolling cache; prompts up to n_layer·block_size
    with torch.no_grad(): full, _ = m(out)                         # one pass, banded causal mask of width block_size
    assert torch.equal(full[:, prompt_len - 1:-1].argmax(-1), out[:, prompt_len:])

def test_long_prompt_is_cut_to_what_the_windows_reach():
    m = rotary_model()                                              # 3 layers x 8 positions: 24 tokens reach the last
    idx = torch.randint(65, (1, 60), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): last = m(idx)[0][:, -1]
    cache = GPTCache(m)
    with torch.no_grad(): cut = m(idx[:, -24:], cache=cache)[0][:, -1]
    torch.testing.assert_close(cut, last, atol=1e-5, rtol=1e-5)
    assert torch.equal(m.generate(idx, 5, temperature=0)[:, 60:], m.generate(idx[:, -24:], 5, temperature=0)[:, 24:])

def test_cache_cost_stays_flat_past_the_window():
    m = rotary_model(block_size=16)
    calls = []
    h = m.blocks[0].attn.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[1]))
    m.generate(torch.zeros(1, 1, dtype=torch.long), 100, temperature=0)
    h.remove()
    assert set(calls) == {1}                                        # one position per token, at token 100 as at 2

def test_cli_arch(home):
    r = chadgpt('train', '--name', 'm', '--max-iters', 4, '--eval-interval', 2, *TINY, home=home)
    assert r.returncode == 0, r.stderr
    cfg = read_json(home/'models'/'m'/'chadgpt.json')
    assert cfg['model']['rotary'] and cfg['model']['norm'] == 'rms' and cfg['train']['optimizer'] == 'muon'
    r = chadgpt('train', '--name', 'l', '--arch', 'lecture', '--max-iters', 4, '--eval-interval', 2, *TINY, home=home)
    assert r.returncode == 0, r.stderr
    cfg = read_json(home/'models'/'l'/'chadgpt.json')
    assert not cfg['model']['rotary'] and cfg['model']['tie_weights'] and cfg['train']['optimizer'] == 'adamw'
    r = chadgpt('train', '--name', 'n', '--no-rotary', '--optimizer', 'adamw', '--max-iters', 2, *TINY, home=home)
    assert r.returncode == 0, r.stderr
    cfg = read_json(home/'models'/'n'/'chadgpt.json')
    assert not cfg['model']['rotary'] and cfg['model']['qk_norm'] and cfg['train']['optimizer'] == 'adamw'
    r = chadgpt('train', '--name', 'm', '--resume', '--arch', 'lecture', '--max-iters', 8, home=home)
    assert r.returncode == 2 and 'resuming or fine-tuning keeps' in r.stderr
    r = chadgpt('train', '--name', 'm', '--resume', '--max-iters', 8, home=home)       # Muon's state resumes
    assert r.returncode == 0, r.stderr
    assert chadgpt('sample', 'm', '--tokens', 20, '--seed', 1, home=home).returncode == 0

def test_rest_arch():
    m, t = request_configs(TrainRequest.model_validate({'hyperparameters': {'arch': 'lecture', 'n_layer': 2}}))
    assert (m, t.optimizer) == (GPTConfig(n_layer=2), 'adamw')
    m, t = request_configs(TrainRequest.model_validate({'hyperparameters': {'rotary': False}}))
    assert (m.rotary, m.norm, t.optimizer) == (False, 'rms', 'muon')            # the default preset, one switch off
    assert (m, t) != arch_configs('lecture')
    with pytest.raises(ValueError): TrainRequest.model_validate({'hyperparameters': {'arch': 'retro'}})
    with pytest.raises(ValueError): TrainRequest.model_validate({'hyperparameters': {'softcap': 1e9}})
