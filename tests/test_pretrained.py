"""GPT-2 weights: a randomly initialised `transformers` GPT-2 of an odd shape, saved and imported, computes the same
logits and greedy tokens; the import is an ordinary model folder that samples, serves and fine-tunes."""
import json
import pytest, torch
from safetensors.torch import load_file, save_file
from conftest import Server, chadgpt, TINY

transformers = pytest.importorskip('transformers')

def hf_gpt2(path, vocab=101, seed=0, **kw):
    "A random GPT-2 with non-zero biases, saved with `save_pretrained` at `path`; returns the model."
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**{'n_embd': 48, 'n_layer': 2, 'n_head': 3, 'n_positions': 40, 'vocab_size': vocab, **kw})
    m = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith('bias'): p.normal_(0, 0.1)
    m.save_pretrained(path)
    return m

def hub_spelling(src, dst):
    "The same weights as the hub's original files spell them: no `transformer.` prefix, with the mask buffers."
    dst.mkdir()
    (dst/'config.json').write_text((src/'config.json').read_text())
    t = {k.removeprefix('transformer.'): v for k, v in load_file(src/'model.safetensors').items()}
    n = json.loads((src/'config.json').read_text())['n_positions']
    for i in range(json.loads((src/'config.json').read_text())['n_layer']): t[f'h.{i}.attn.bias'] = torch.ones(1, 1, n, n).tril()
    save_file(t, dst/'model.safetensors')

@pytest.mark.parametrize('shape', [dict(), dict(n_embd=64, n_head=4, n_layer=3, n_positions=24, vocab_size=77,
                                                  activation_function='gelu')])
def test_imported_gpt2_computes_the_same_logits(home, tmp_path, shape):
    from chadgpt.train import load_model
    hf = hf_gpt2(tmp_path/'hf', **shape)
    hub_spelling(tmp_path/'hf', tmp_path/'hub')
    V, T = hf.config.vocab_size, hf.config.n_positions
    idx = torch.randint(V, (2, T))
    with torch.no_grad(): want = hf(idx).logits
    for i, src in enumerate(('hf', 'hub')):
        r = chadgpt('import', tmp_path/src, '--name', f'm{i}', home=home)
        assert r.returncode == 0, r.stderr
        model, tok = load_model(f'm{i}', home)
        with torch.no_grad(): got = model(idx)[0][..., :V]
        assert (got - want).abs().max() < 1e-5
        greedy = hf.generate(idx[:1, :4], max_new_tokens=T - 4, do_sample=False, pad_token_id=0)
        assert torch.equal(model.generate(idx[:1, :4], T - 4, temperature=0), greedy)

def test_import_sample_serve_and_fine_tune(home, tmp_path):
    hf_gpt2(tmp_path/'hf', vocab=50_257)                     # GPT-2's vocabulary: its tokenizer applies
    assert chadgpt('import', tmp_path/'hf', '--name', 'g', home=home).returncode == 0
    r = chadgpt('sample', 'g', '--prompt', 'ROMEO:', '--tokens', 10, '--seed', 1, home=home)
    assert r.returncode == 0 and r.stdout.startswith('ROMEO:'), r.stderr
    r = chadgpt('train', '--init-from', 'g', '--name', 'ft', '--block-size', 32, '--batch-size', 4, '--max-iters', 6,
                '--eval-interval', 3, '--eval-iters', 2, '--learning-rate', 1e-3, '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((home/'models'/'ft'/'chadgpt.json').read_text())
    assert cfg['init_from'] == 'g' and cfg['tokenizer'] == 'gpt2' and cfg['model']['block_size'] == 32
    assert cfg['model']['qkv_bias'] and cfg['model']['gelu'] == 'tanh'
    metrics = [json.loads(l) for l in (home/'models'/'ft'/'metrics.jsonl').read_text().splitlines()]
    assert metrics[-1]['val_loss'] < metrics[0]['val_loss']                  # fine-tuning learns Shakespeare
    for argv, words in [(('--init-from', 'g', '--n-layer', 5), "fine-tuning keeps the shape of 'g'"),
                        (('--init-from', 'g', '--block-size', 64), "block_size up to 40"),
                        (('--init-from', 'g', '--tokenizer', 'char'), "keeps the tokenizer of 'g' (gpt2)"),
                        (('--init-from', 'nosuch'), "unknown model 'nosuch'")]:
        r = chadgpt('train', '--name', 'bad', *argv, '--quiet', home=home)
        assert r.returncode == 2 and words in r.stderr, r.stderr
    s = Server(home)
    try:
        r = s.client.get('/lm/g/eval', params={'tokens': 8, 'seed': 2, 'prompt': 'KING'})
        assert r.status_code == 200 and isinstance(r.json()['eval'], str), r.text
        assert s.client.get('/lm/g').json()['tokenizer'] == {'type': 'gpt2', 'vocab_size': 50_257}
    finally: s.stop()

def test_bad_sources_are_one_line(home, tmp_path):
    (tmp_path/'pickle').mkdir(); (tmp_path/'pickle'/'config.json').write_text('{}')
    (tmp_path/'pickle'/'pytorch_model.bin').write_bytes(b'not read')
    for src, words in [(tmp_path/'nowhere', "neither a folder nor one of gpt2"), (tmp_path/'pickle', "no model.safetensors")]:
        r = chadgpt('import', src, '--name', 'x', home=home)
        assert r.returncode == 2 and words in r.stderr and r.stderr.count('\n') == 1, r.stderr
    hf_gpt2(tmp_path/'hf', vocab=101)
    assert chadgpt('import', tmp_path/'hf', '--name', 'small', home=home).returncode == 0
    r = chadgpt('sample', 'small', '--prompt', 'ROMEO', '--tokens', 3, home=home)   # GPT-2 ids beyond its 101 tokens
    assert r.returncode == 2 and "outside this model's 101 tokens" in r.stderr, r.stderr

def test_untied_and_sharded_models_import(home, tmp_path):
    from chadgpt.train import load_model
    hf = hf_gpt2(tmp_path/'untied', vocab=97, tie_word_embeddings=False)         # its own output matrix
    hf.save_pretrained(tmp_path/'sharded', max_shard_size='20KB')                # many shards and an index
    assert (tmp_path/'sharded'/'model.safetensors.index.json').is_file()
    idx = torch.randint(97, (1, 40))
    with torch.no_grad(): want = hf(idx).logits
    for i, src in enumerate(('untied', 'sharded')):
        assert chadgpt('import', tmp_path/src, '--name', f'u{i}', home=home).returncode == 0
        model, _ = load_model(f'u{i}', home)
        assert not model.config.tie_weights
        with torch.no_grad(): assert (model(idx)[0][..., :97] - want).abs().max() < 1e-5

def test_from_pretrained_needs_only_the_model_module(tmp_path):
    "`from chadgpt.model import GPT; GPT.from_pretrained(folder)` in a fresh interpreter, nothing else imported first."
    import subprocess, sys
    hf = hf_gpt2(tmp_path/'hf')
    code = ("import sys, torch; from chadgpt.model import GPT; m = GPT.from_pretrained(sys.argv[1]); "
            "assert 'chadgpt.pretrained' not in sys.modules; print(m.config.n_layer, m(torch.zeros(1, 4, dtype=torch.long))[0].shape[-1])")
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path/'hf')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['2', str(hf.config.vocab_size + (-hf.config.vocab_size) % 64)]
