"""Tokenizers beyond characters, end to end: the seed's word and tiktoken requests over HTTP, `--tokenizer bpe`
from the command line, token files, bits per byte, and every way a tokenizer can be asked for wrongly."""
import json, os, shutil
from pathlib import Path
import pytest
from conftest import Server, chadgpt, TINY

HP = {'block_size': 32, 'n_head': 2, 'n_embed': 32, 'n_layer': 1, 'batch_size': 8, 'eval_iters': 2,
      'max_iters': 20, 'eval_interval': 10}

@pytest.fixture
def server(home):
    s = Server(home)
    yield s
    s.stop()

@pytest.mark.parametrize('tokenizer,vocab', [('word', 13_333), ('tiktoken', 50_257)])
def test_seed_tokenizers_train_and_evaluate_over_http(server, tokenizer, vocab):
    c = server.client
    body = {'dataset': 'shakespeare', 'tokenizer': tokenizer, 'hyperparameters': HP}   # the seed's request shape
    r = c.post(f'/lm/{tokenizer}/train', json=body)
    assert r.status_code == 202, r.text
    st = server.wait(tokenizer)
    assert st['state'] == 'done', st
    assert st['val_bpb'] is not None and 0 < st['val_bpb'] < 20
    info = c.get(f'/lm/{tokenizer}').json()
    assert info['tokenizer'] == {'type': 'gpt2' if tokenizer == 'tiktoken' else 'word', 'vocab_size': vocab}
    assert info['config']['model']['vocab_size'] == vocab and info['config']['model']['vocab_multiple'] == 64
    assert all(m['val_bpb'] > 0 for m in info['metrics'])
    r = c.get(f'/lm/{tokenizer}/eval', params={'tokens': 40, 'seed': 1, 'prompt': 'ROMEO:'})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()['eval'], str) and r.json()['eval']
    assert c.get(f'/lm/{tokenizer}/eval', params={'tokens': 40, 'seed': 1, 'prompt': 'ROMEO:'}).json() == r.json()
    if tokenizer == 'word':
        r = c.get('/lm/word/eval', params={'tokens': 5, 'prompt': 'the king of Xerxes'})
        assert r.status_code == 422 and "word 'Xerxes'" in r.json()['detail'], r.text

def test_bpe_size_comes_from_vocab_size_and_is_checked(server):
    c = server.client
    r = c.post('/lm/b/train', json={'tokenizer': 'bpe', 'hyperparameters': {**HP, 'vocab_size': 512}})
    assert r.status_code == 202, r.text
    assert server.wait('b')['state'] == 'done'
    assert c.get('/lm/b').json()['tokenizer'] == {'type': 'bpe', 'vocab_size': 512}
    assert (server.home/'tokens'/'shakespeare.bpe-512'/'meta.json').is_file()
    for body, words in [({'tokenizer': 'sentencepiece'}, "Input should be 'character'"),
                        ({'tokenizer': 'bpe', 'hyperparameters': {'vocab_size': 70_000}}, "between 256 and 65,536"),
                        ({'tokenizer': 'bpe', 'hyperparameters': {'vocab_size': 255}}, "between 256 and 65,536")]:
        r = c.post('/lm/x/train', json=body)
        assert r.status_code == 422 and words in r.json()['detail'], r.text
    c.post('/ds/upload', files={'file': ('short.txt', b'a small text, too small for many merges\n' * 3)})
    r = c.post('/lm/x/train', json={'dataset': 'short.txt', 'tokenizer': 'bpe', 'hyperparameters': {**HP, 'vocab_size': 4096}})
    assert r.status_code == 422 and "too small for a vocabulary of 4,096" in r.json()['detail'], r.text
    r = c.post('/lm/b/train', json={'tokenizer': 'word', 'resume': True, 'hyperparameters': {'max_iters': 30}})
    assert r.status_code == 422 and "trained with the bpe:512 tokenizer" in r.json()['detail'], r.text
    r = c.post('/lm/b/train', json={'resume': True, 'hyperparameters': {'max_iters': 30}})
    assert r.status_code == 202, r.text
    assert server.wait('b')['step'] == 30

def test_cli_bpe_trains_and_samples(home):
    r = chadgpt('train', '--name', 'b', '--tokenizer', 'bpe:2048', *TINY, '--max-iters', 30, '--eval-interval', 15, home=home)
    assert r.returncode == 0, r.stderr
    assert 'bits per byte' in r.stdout
    cfg = json.loads((home/'models'/'b'/'chadgpt.json').read_text())
    assert cfg['tokenizer'] == 'bpe:2048' and cfg['model']['vocab_size'] == 2048
    tok = json.loads((home/'models'/'b'/'tokenizer.chadgpt.json').read_text())
    assert tok['type'] == 'bpe' and len(tok['ranks']) == 2048              # self-contained: the ranks themselves
    metrics = [json.loads(l) for l in (home/'models'/'b'/'metrics.jsonl').read_text().splitlines()]
    assert [m['step'] for m in metrics] == [0, 15, 30] and all(m['val_bpb'] > 0 for m in metrics)
    r = chadgpt('sample', 'b', '--prompt', 'ROMEO:', '--tokens', 30, '--seed', 3, home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('ROMEO:') and len(r.stdout) > len('ROMEO:') + 30    # BPE tokens hold several characters
    assert chadgpt('sample', 'b', '--prompt', 'ROMEO:', '--tokens', 30, '--seed', 3, home=home).stdout == r.stdout

def test_prepare_reuses_and_notices_a_changed_source(home, shakespeare):
    (home/'data'/'plays.txt').write_text(shakespeare.read_text()[:200_000])
    r = chadgpt('prepare', 'plays.txt', '--tokenizer', 'word', '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    folder = home/'tokens'/'plays.txt.word'
    meta = json.loads((folder/'meta.json').read_text())
    assert meta['characters'] == 200_000 and meta['dtype'] == 'uint16' and meta['source']['size'] == 200_000
    n = (folder/'train.bin').stat().st_size
    assert n == 2 * meta['train_tokens']
    first = (folder/'train.bin').stat().st_mtime_ns
    assert chadgpt('prepare', 'plays.txt', '--tokenizer', 'word', '--quiet', home=home).returncode == 0
    assert (folder/'train.bin').stat().st_mtime_ns == first                  # reused
    (home/'data'/'plays.txt').write_text(shakespeare.read_text()[:100_000])
    assert chadgpt('prepare', 'plays.txt', '--tokenizer', 'word', '--quiet', home=home).returncode == 0
    assert json.loads((folder/'meta.json').read_text())['characters'] == 100_000   # prepared again

def test_missing_or_corrupt_tokenizer_is_one_line(home):
    assert chadgpt('train', '--name', 'm', *TINY, '--max-iters', 5, '--eval-interval', 5, home=home).returncode == 0
    tok = home/'models'/'m'/'tokenizer.chadgpt.json'
    for content, words in [(None, "no tokenizer file"), ('{"type": "bpe", "ranks": 3}', "damaged tokenizer file"),
                           ('not json', "not a valid tokenizer file"), ('{"type": "unigram"}', "unknown tokenizer type")]:
        if content is None: tok.unlink()
        else: tok.write_text(content)
        r = chadgpt('sample', 'm', '--tokens', 5, home=home)
        assert r.returncode == 2 and words in r.stderr and r.stderr.count('\n') == 1, r.stderr

def test_old_character_models_keep_loading(home):
    assert chadgpt('train', '--name', 'old', *TINY, '--max-iters', 5, '--eval-interval', 5, home=home).returncode == 0
    d = home/'models'/'old'
    cfg = json.loads((d/'chadgpt.json').read_text())                       # the folder as chadgpt wrote it before:
    del cfg['format'], cfg['tokenizer'], cfg['model']['vocab_multiple']    # format 1, with fewer settings
    (d/'config.json').write_text(json.dumps(cfg)); (d/'chadgpt.json').unlink()
    (d/'tokenizer.chadgpt.json').rename(d/'tokenizer.json')
    r = chadgpt('sample', 'old', '--prompt', 'ROMEO:', '--tokens', 20, home=home)
    assert r.returncode == 0 and len(r.stdout) == len('ROMEO:') + 20 + 1, r.stderr
    r = chadgpt('train', '--name', 'old', '--resume', '--max-iters', 10, '--quiet', home=home)
    assert r.returncode == 0, r.stderr

def test_gpt2_offline_without_the_ranks_says_where_to_put_them(home, tmp_path):
    r = chadgpt('prepare', 'shakespeare', '--tokenizer', 'gpt2', '--quiet', home=home, timeout=120,
                env={'TIKTOKEN_CACHE_DIR': str(tmp_path/'empty-cache')})
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert str(tmp_path/'empty-cache'/'0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4') in r.stderr
