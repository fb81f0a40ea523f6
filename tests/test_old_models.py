"""Model folders saved by chadgpt at fa96a23 (tests/fixtures/models_fa96a23, made by make_old_models.py) keep working:
they load, give the greedy text they gave then, serve, and resume, whatever the package's insides become. They are
format 1 (`config.json` and `tokenizer.json`, Hugging Face's names for chadgpt's own files); the first reader brings
them to format 2 (`chadgpt.json`, `tokenizer.chadgpt.json`) in place."""
import errno, json, shutil
from pathlib import Path
import pytest
import chadgpt.checkpoint as checkpoint_module
from chadgpt.checkpoint import FORMAT, model_dir
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

FORMAT_1, FORMAT_2 = {'config.json', 'tokenizer.json'}, {'chadgpt.json', 'tokenizer.chadgpt.json'}
names = lambda d: {p.name for p in d.iterdir()}

@pytest.mark.parametrize('name', NAMES)
def test_old_folders_are_renamed_on_first_read(old_home, name):
    d = old_home/'models'/name
    old_cfg = json.loads((d/'config.json').read_text())
    old_tok = (d/'tokenizer.json').read_bytes()
    assert not names(d) & FORMAT_2
    assert Store(old_home).list_models() == sorted(NAMES)                   # listed before anyone reads them
    load_model(name, old_home)
    assert names(d) & (FORMAT_1 | FORMAT_2) == FORMAT_2
    assert json.loads((d/'chadgpt.json').read_text()) == {'format': FORMAT, **old_cfg}
    assert (d/'tokenizer.chadgpt.json').read_bytes() == old_tok
    assert read_json(d/'state.json')['step'] > 0                               # state.json as it was: scripts read its step
    info = Store(old_home).model_info(name)
    assert info['config']['model'] == old_cfg['model'] and info['tokenizer']

def test_a_folder_that_cannot_be_written_is_read_as_it_is(old_home, monkeypatch):
    def read_only(*a, **kw): raise OSError(errno.EROFS, 'Read-only file system')
    monkeypatch.setattr(checkpoint_module, 'atomic_write', read_only)       # (tests run as root: chmod would not stop it)
    d = old_home/'models'/'word'
    model, tok = load_model('word', old_home)
    assert generate_text(model, tok, SAMPLES['prompt'], SAMPLES['new_tokens'], temperature=0.0) == SAMPLES['samples']['word']
    assert names(d) & (FORMAT_1 | FORMAT_2) == FORMAT_1
    assert Store(old_home).model_info('word')['config']['model']['vocab_size'] > 0

def test_an_upgrade_cut_short_is_finished_by_the_next_reader(old_home):
    a, b = old_home/'models'/'char-lecture', old_home/'models'/'char-modern'
    shutil.copy(a/'tokenizer.json', a/'tokenizer.chadgpt.json')               # killed after the first step
    cfg = json.loads((b/'config.json').read_text())
    shutil.copy(b/'tokenizer.json', b/'tokenizer.chadgpt.json')               # killed after the second
    (b/'chadgpt.json').write_text(json.dumps({'format': FORMAT, **cfg}))
    for d in (a, b):
        model_dir(d.name, old_home)
        assert names(d) & (FORMAT_1 | FORMAT_2) == FORMAT_2
        assert json.loads((d/'chadgpt.json').read_text())['format'] == FORMAT
    r = chadgpt('sample', 'char-modern', '--prompt', SAMPLES['prompt'], '--tokens', SAMPLES['new_tokens'], '--temperature', 0, home=old_home)
    assert r.returncode == 0 and SAMPLES['samples']['char-modern'] in r.stdout, r.stderr

def test_a_newer_format_and_a_hugging_face_folder_are_told_apart(old_home):
    d = old_home/'models'/'bpe'
    load_model('bpe', old_home)
    cfg = json.loads((d/'chadgpt.json').read_text())
    (d/'chadgpt.json').write_text(json.dumps({**cfg, 'format': FORMAT + 1}))
    r = chadgpt('sample', 'bpe', '--tokens', 5, home=old_home)
    assert r.returncode == 2 and f'has format {FORMAT + 1}, newer than this chadgpt reads ({FORMAT}); upgrade chadgpt' in r.stderr
    assert r.stderr.count('\n') == 1, r.stderr
    hf = old_home/'models'/'hf'; hf.mkdir()                                   # a Hugging Face folder is not a chadgpt model
    (hf/'config.json').write_text('{"model_type": "gpt2", "n_embd": 16}'); (hf/'tokenizer.json').write_text('{}')
    assert 'hf' not in Store(old_home).list_models()
    r = chadgpt('sample', 'hf', '--tokens', 5, home=old_home)
    assert r.returncode == 2 and "unknown model 'hf'" in r.stderr, r.stderr
    assert names(hf) == {'config.json', 'tokenizer.json'}                     # and is left alone
