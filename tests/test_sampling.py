"""Sampling extras: several samples, stop strings, a prompt from a file and a repetition penalty, the same in Python,
on the command line, over REST (/lm/{name}/eval) and in the sampling panel."""
from dataclasses import replace
import pytest, torch
from fastapi.testclient import TestClient
from conftest import chadgpt
from chadgpt.api import create_app
from chadgpt.checkpoint import load_model
from chadgpt.model import GPTConfig, penalise_repeats
from chadgpt.sample import Sampling, StopAt, generate_text, stream_text
from chadgpt.train import TrainConfig, train
from chadgpt.widgets import SamplePanel

@pytest.fixture(scope='module')
def home(tmp_path_factory, shakespeare):
    h = tmp_path_factory.mktemp('sampling')
    (h/'data').mkdir()
    (h/'data'/'plays.txt').write_text(shakespeare.read_text()[:50_000])
    train('m', GPTConfig(block_size=32, n_layer=1, n_head=2, n_embed=32), TrainConfig(max_iters=60, eval_interval=60, eval_iters=1,
          batch_size=8, device='cpu', dtype='float32'), 'plays.txt', h, progress=False)
    return h

def text(home, prompt='ROMEO:', n=40, stops=(), **s):
    model, tok = load_model('m', home)
    return ''.join(StopAt(stream_text(model, tok, prompt, n, Sampling(**s)), list(stops)))

def test_the_penalty():
    logits, idx = torch.tensor([[2.0, -2.0, 1.0, 0.5]]), torch.tensor([[0, 1, 1]])
    assert penalise_repeats(logits, idx, 2.0).tolist() == [[1.0, -4.0, 1.0, 0.5]]
    with pytest.raises(Exception, match="repetition_penalty must be in"): Sampling(repetition_penalty=0)

def test_python_and_the_command_line(home):
    greedy, penalised = text(home, temperature=0), text(home, temperature=0, repetition_penalty=1.8)
    assert penalised != greedy                                          # the penalty changes what greedy picks
    stop = penalised[12:15]
    want = penalised[:penalised.index(stop)]
    (home/'prompt.txt').write_text('ROMEO:')
    r = chadgpt('sample', 'm', '--prompt-file', home/'prompt.txt', '--temperature', 0, '--repetition-penalty', 1.8, '--stop', stop,
                '--stop', 'zzzz', '--tokens', 40, home=home)
    assert r.returncode == 0 and r.stdout == 'ROMEO:' + want + '\n', (r.stdout, r.stderr)
    r = chadgpt('sample', 'm', '--prompt', 'ROMEO:', '--num-samples', 3, '--seed', 7, '--tokens', 40, home=home)
    assert r.returncode == 0, r.stderr
    samples = r.stdout.split('---\n')     # made in shared steps, past the 32-token window, printed one after another:
    assert len(set(samples)) == 3 and samples == [f"ROMEO:{text(home, seed=s, temperature=0.8)}\n" for s in (7, 8, 9)]   # each its seed's alone
    r = chadgpt('sample', 'm', '--prompt', 'ROMEO:', '--seed', 8, '--tokens', 40, home=home)   # the second: seed 7 + 1
    assert r.stdout == samples[1]
    r = chadgpt('sample', 'm', '--prompt-file', home/'nope.txt', home=home)
    assert r.returncode == 2 and 'nope.txt does not exist' in r.stderr and r.stderr.count('\n') == 1, r.stderr

def test_rest(home):
    c = TestClient(create_app(home, allowed_hosts=['testserver']))
    r = c.get('/lm/m/eval', params={'prompt': 'ROMEO:', 'tokens': 20, 'seed': 3, 'num_samples': 2, 'temperature': 1.0})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j['samples'] == [text(home, n=20, seed=3), text(home, n=20, seed=4)] and j['eval'] == j['samples'][0]
    greedy = text(home, temperature=0, repetition_penalty=1.5)
    r = c.get('/lm/m/eval', params={'prompt': 'ROMEO:', 'tokens': 40, 'temperature': 0, 'repetition_penalty': 1.5,
                                     'stop': [greedy[8:11], 'qqq']})
    assert r.json()['eval'] == greedy[:greedy.index(greedy[8:11])], r.text
    for params, words in [({'num_samples': 2, 'stream': True}, 'cannot stream'), ({'stop': ['a'] * 5}, 'stop'),
                          ({'repetition_penalty': 0}, 'repetition_penalty'), ({'num_samples': 9}, 'num_samples')]:
        r = c.get('/lm/m/eval', params=params)
        assert r.status_code == 422 and words in r.text, r.text

def test_the_panel(home):
    model, tok = load_model('m', home)
    p = SamplePanel(model, tok, prompt='ROMEO:')
    p.temperature.value, p.seed.value, p.samples.value, p.length.value, p.penalty.value = 1.0, 5, 2, 20, 1.2
    first = text(home, n=20, seed=5, repetition_penalty=1.2)
    p.stop_at.value = first[5:7]
    p.generate()
    cut = lambda t: t[:t.index(first[5:7])] if first[5:7] in t else t
    assert p.wait(60) == 'ROMEO:' + cut(first) + '\n---\nROMEO:' + cut(text(home, n=20, seed=6, repetition_penalty=1.2))
