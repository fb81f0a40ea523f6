"""Model folders saved by chadgpt at fa96a23 (tests/fixtures/models_fa96a23, made by make_old_models.py) keep working:
they load, give the greedy text they gave then, serve, and resume, whatever the package's insides become."""
import json, shutil
from pathlib import Path
import pytest
from chadgpt.sample import generate_text
from chadgpt.store import Store
from chadgpt.train import load_model, saved_configs, train, read_json
from conftest import chadgpt

FIXTURES = Path(__file__).parent/'fixtures'/'models_fa96a23'
SAMPLES = json.loads((FIXTURES/'samples.json').read_text())
NAMES = list(SAMPLES['samples'])

@pytest.fixture
def old_home(home):
    "A home holding the old model folders, and the text the word and bpe models were trained on."
    text = (home/'data'/'tinyshakespeare.txt').read_text()
    (home/'data'/'plays.txt').write_text(text[:SAMPLES['plays_chars']])
    for name in NAMES: shutil.copytree(FIXTURES/name, home/'models'/name)
    return home

def test_the_fixtures_are_all_there():
    assert sorted(NAMES) == ['bpe', 'char-lecture', 'char-modern', 'word']
    for name in NAMES: assert {p.name for p in (FIXTURES/name).iterdir()} >= {'config.json', 'tokenizer.json',
                                                                              'model.safetensors', 'optimizer.safetensors', 'state.json'}

@pytest.mark.parametrize('name', NAMES)
def test_old_folders_load_and_give_their_text(old_home, name):
    model, tok = load_model(name, old_home)
    text = generate_text(model, tok, SAMPLES['prompt'], SAMPLES['new_tokens'], temperature=0.0)
    assert text == SAMPLES['samples'][name]
    served, stok = Store(old_home).load(name)                                  # what the service loads
    assert generate_text(served, stok, SAMPLES['prompt'], SAMPLES['new_tokens'], temperature=0.0) == text

@pytest.mark.parametrize('name', NAMES)
def test_old_folders_resume(old_home, name):
    step = read_json(old_home/'models'/name/'state.json')['step']
    mcfg, tcfg = saved_configs(name, old_home, train_overrides={'max_iters': step + 2})
    out = train(name, mcfg, tcfg, home=old_home, resume=True, progress=False)
    st = read_json(out/'state.json')
    assert st['status'] == 'done' and st['step'] == step + 2

def test_old_folder_samples_from_the_command_line(old_home):
    r = chadgpt('sample', 'char-modern', '--prompt', SAMPLES['prompt'], '--tokens', SAMPLES['new_tokens'],
                '--temperature', 0, home=old_home)
    assert r.returncode == 0, r.stderr
    assert SAMPLES['prompt'] + SAMPLES['samples']['char-modern'] in r.stdout
