"""End-to-end tests of the `chadgpt` command: train, sample, resume, and every bad input."""
import json, os, signal, subprocess, shutil, sys, time
from pathlib import Path
import pytest, torch
from conftest import TINY, chadgpt
from chadgpt.train import checkpoint_step, cpu_has_bf16, load_model, read_metrics

def test_train_then_sample(home):
    r = chadgpt('train', '--name', 'tiny', '--max-iters', 30, '--eval-interval', 10, *TINY, home=home)
    assert r.returncode == 0, r.stderr
    assert "val loss" in r.stdout
    d = home/'models'/'tiny'
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ['chadgpt.json', 'tokenizer.chadgpt.json', 'model.safetensors', 'optimizer.safetensors', 'state.json', 'metrics.jsonl'])
    assert [m['step'] for m in read_metrics('tiny', home)] == [0, 10, 20, 30]
    s1 = chadgpt('sample', 'tiny', '--prompt', 'KING:', '--tokens', 64, '--seed', 3, home=home)
    s2 = chadgpt('sample', 'tiny', '--prompt', 'KING:', '--tokens', 64, '--seed', 3, home=home)
    s3 = chadgpt('sample', 'tiny', '--prompt', 'KING:', '--tokens', 64, '--seed', 4, home=home)
    assert s1.returncode == 0, s1.stderr
    assert s1.stdout.startswith('KING:') and len(s1.stdout) == len('KING:') + 64 + 1
    assert s1.stdout == s2.stdout != s3.stdout

def test_same_seed_same_run(home):
    for name in ('a', 'b'):
        assert chadgpt('train', '--name', name, '--max-iters', 20, '--eval-interval', 10, *TINY, home=home).returncode == 0
    assert len(read_metrics('a', home)) == 3
    strip = lambda ms: [{k: v for k, v in m.items() if k != 'elapsed_s'} for m in ms]
    assert strip(read_metrics('a', home)) == strip(read_metrics('b', home))

def test_reload_gives_identical_logits(home):
    from chadgpt.train import train, TrainConfig
    from chadgpt.model import GPTConfig
    cfg = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embed=32, dropout=0.1)
    train('m', cfg, TrainConfig(batch_size=8, max_iters=15, eval_interval=15, eval_iters=2, device='cpu'), home=home, progress=False)
    m1, tok1 = load_model('m', home)
    m2, tok2 = load_model(home/'models'/'m')   # by folder, too
    x = torch.randint(tok1.vocab_size, (3, 32))
    with torch.no_grad(): assert torch.equal(m1(x)[0], m2(x)[0])
    assert tok1 == tok2 and not m1.training
    assert m1.lm_head.weight.data_ptr() == m1.token_embedding.weight.data_ptr()  # tying survives the reload

def test_resume_continues_step_count(home):
    assert chadgpt('train', '--name', 'r', '--max-iters', 20, '--eval-interval', 10, *TINY, home=home).returncode == 0
    r = chadgpt('train', '--name', 'r', '--resume', '--max-iters', 40, '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    assert "to step 40" in r.stdout
    assert [m['step'] for m in read_metrics('r', home)] == [0, 10, 20, 30, 40]
    cfg = json.loads((home/'models'/'r'/'chadgpt.json').read_text())
    assert cfg['model']['n_embed'] == 32 and cfg['train']['max_iters'] == 40
    again = chadgpt('train', '--name', 'r', '--resume', '--quiet', home=home)
    assert again.returncode == 2 and "already trained to step 40" in again.stderr

def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(home):
    p = subprocess.Popen([shutil.which('chadgpt'), 'train', '--name', 'int', '--max-iters', '100000', '--eval-interval', '1000',
                          *TINY], env={**os.environ, 'CHADGPT_HOME': str(home)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = home/'models'/'int'/'state.json'
    deadline = time.time() + 60
    while not (state.exists() and (home/'models'/'int'/'model.safetensors').exists()) and time.time() < deadline: time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    st = json.loads(state.read_text())
    assert st['status'] == 'cancelled' and st['step'] > 0
    load_model('int', home)
    r = chadgpt('train', '--name', 'int', '--resume', '--max-iters', st['step'] + 5, '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(state.read_text())['step'] == st['step'] + 5

def test_killed_run_leaves_a_loadable_model(home):
    p = subprocess.Popen([shutil.which('chadgpt'), 'train', '--name', 'k', '--max-iters', '100000', '--eval-interval', '5',
                          *TINY], env={**os.environ, 'CHADGPT_HOME': str(home)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = home/'models'/'k'/'metrics.jsonl'
    deadline = time.time() + 60
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4) and time.time() < deadline: time.sleep(0.05)
    p.kill(); p.wait()
    load_model('k', home)   # the weights on disk are always a complete checkpoint
    # the weights' step decides (a kill between writing them and state.json leaves state.json one eval behind)
    r = chadgpt('train', '--name', 'k', '--resume', '--max-iters', checkpoint_step(home/'models'/'k') + 5, '--quiet', home=home)
    assert r.returncode == 0, r.stderr

BAD = [
    (['train', '--dataset', 'nosuch'], "unknown dataset 'nosuch'"),
    (['train', '--dataset', 'empty.txt'], "is empty"),
    (['train', '--dataset', 'latin1.txt'], "not UTF-8"),
    (['train', '--n-embed', '100', '--n-head', '6'], "n_embed (100) must be divisible by n_head (6)"),
    (['train', '--n_embed', '100', '--n_head', '6'], "n_embed (100) must be divisible by n_head (6)"),
    (['train', '--n-layer', '0'], "n_layer must be >= 1 and <= 48, got 0"),
    (['train', '--n-embed', '-32'], "n_embed must be >= 1 and <= 2048, got -32"),
    (['train', '--block-size', '0'], "block_size must be >= 1"),
    (['train', '--batch-size', '0'], "batch_size must be >= 1"),
    (['train', '--max-iters', '-1'], "max_iters must be >= 1"),
    (['train', '--eval-interval', '0'], "eval_interval must be >= 1"),
    (['train', '--eval-iters', '0'], "eval_iters must be >= 1"),
    (['train', '--learning-rate', '0'], "learning_rate must be > 0"),
    (['train', '--dropout', '1'], "dropout must be >= 0 and < 1"),
    (['train', '--dropout', '-0.1'], "dropout must be >= 0 and < 1"),
    (['train', '--block-size', '2000000'], "block_size must be >= 1 and <= 2048"),
    (['train', '--dataset', 'short.txt', '--block-size', '64'], "fewer than block_size + 1"),
    (['train', '--device', 'tpu'], "device must be"),
    (['train', '--n-layer', 'x'], "n_layer must be an integer, got 'x'"),
    (['train', '--name', '../up'], "invalid model name"),
    (['train', '--resume', '--name', 'ghost'], "unknown model 'ghost'"),
    (['sample', 'ghost'], "unknown model 'ghost'"),
    (['sample', 'tiny', '--temperature', '-1'], "temperature must be"),
    (['sample', 'tiny', '--top-k', '0'], "top_k must be a positive integer"),
    (['sample', 'tiny', '--tokens', '-5'], "max_new_tokens must be a non-negative integer"),
    (['sample', 'tiny', '--prompt', '€'], "'€' (U+20AC) at position 0"),
    (['train', '--dtype', 'float64'], "dtype must be auto, float32, bfloat16 or float16, got 'float64'"),
    (['train', '--device', 'mps'], "Apple's Metal backend is not available"),
    (['serve', '--port', '70000'], "--port must be between 1 and 65535"),
    (['bench', '--config', 'huge'], "invalid choice: 'huge'"),
    (['bench', '--steps', '0'], "--steps must be at least 1"),
    (['bench', '--device', 'cuda'], "CUDA is not available"),
    (['bench', '--streams', '-1'], "--streams must be 0 or more, got -1"),
    (['bench', '--race'], "--race needs --nanogpt MODEL_PY"),
    (['bench', '--goals'], "--goals needs --nanogpt MODEL_PY"),
    (['bench', '--goals', '--nanogpt', 'm.py', '--device', 'cuda'], "--goals measures this machine's CPU"),
    (['frobnicate'], "invalid choice"),
    (['train', '--config', 'HOME/unknown.toml'], "the config file HOME/unknown.toml, key 'n_layers': not a setting"),
    (['sft', 'tiny', '--config', 'HOME/unknown.toml'], "key 'n_layers': not a setting of this command"),
    (['sft', 'tiny', '--config', 'HOME/shape.toml'], "key 'n_embed': not a setting of this command"),   # sft keeps the shape
    (['train', '--config', 'HOME/table.toml'], "key 'model': a table; the file holds flat keys"),
    (['train', '--config', 'HOME/syntax.toml'], "is not valid TOML"),
    (['train', '--config', 'HOME/type.toml'], "key 'n_layer': n_layer must be an integer, got '4'"),
    (['train', '--config', 'HOME/arch.toml'], "key 'arch': arch must be lecture or modern, got 'huge'"),
    (['train', '--config', 'HOME/none.toml'], "cannot read the config file"),
]
CONFIGS = {'unknown.toml': 'n_layers = 2\n', 'shape.toml': 'n_embed = 64\n', 'table.toml': '[model]\nn_layer = 2\n',
           'syntax.toml': 'n_layer = \n', 'type.toml': 'n_layer = "4"\n', 'arch.toml': 'arch = "huge"\n'}

def test_a_config_file_and_flags_over_it(home):
    (home/'run.toml').write_text('# settings as in the API\nn_layer = 1\nn_embed = 32\nn_heads = 2\nblock_size = 32\n'
                                 'batch_size = 8\neval_iters = 2\nmax_iters = 50\nlearning_rate = 3e-3\nlr_decay = false\n'
                                 'arch = "lecture"\ndataset = "shakespeare"\nname = "filed"\n')
    r = chadgpt('train', '--config', home/'run.toml', '--max-iters', 6, '--eval-interval', 3, '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    saved = json.loads((home/'models'/'filed'/'chadgpt.json').read_text())
    assert (saved['model']['n_head'], saved['model']['rotary'], saved['train']['learning_rate'], saved['train']['lr_decay'],
            saved['train']['max_iters'], saved['train']['optimizer']) == (2, False, 3e-3, False, 6, 'adamw')

def test_float16_with_a_gradient_scaler_resumes_exactly(home):
    "float16 (for GPUs without bf16) trains with a gradient scaler, checked on the CPU: a resumed run equals an unbroken one."
    run = ['--dtype', 'float16', '--eval-interval', 4, '--arch', 'lecture', *TINY]
    assert chadgpt('train', '--name', 'whole', '--max-iters', 8, *run, home=home).returncode == 0
    assert chadgpt('train', '--name', 'half', '--max-iters', 4, *run, home=home).returncode == 0
    st = json.loads((home/'models'/'half'/'state.json').read_text())
    assert st['dtype'] == 'float16' and st['grad_scaler']['scale'] > 1, st
    r = chadgpt('train', '--name', 'half', '--resume', '--max-iters', 8, '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    losses = lambda name: [(m['step'], m['train_loss'], m['val_loss']) for m in read_metrics(home/'models'/name)]
    assert losses('half') == losses('whole')

def test_logging_to_tensorboard_and_wandb(home, tmp_path):
    "--tensorboard writes the evaluations' records; --wandb (where wandb is installed) keeps an offline run."
    import importlib.util
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    wandb = [] if importlib.util.find_spec('wandb') is None else ['--wandb', 'chadgpt-test']
    r = chadgpt('train', '--name', 'logged', '--max-iters', 20, '--eval-interval', 10, '--tensorboard', tmp_path/'tb', *wandb, *TINY,
                home=home, env={'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp_path), 'WANDB_SILENT': 'true'})
    assert r.returncode == 0, r.stderr
    ea = EventAccumulator(str(tmp_path/'tb')); ea.Reload()
    assert [e.step for e in ea.Scalars('val_loss')] == [0, 10, 20]
    assert [round(e.value, 5) for e in ea.Scalars('val_loss')] == [m['val_loss'] for m in read_metrics(home/'models'/'logged')]
    if wandb: assert list((tmp_path/'wandb').glob('offline-run-*/run-*.wandb')), list((tmp_path/'wandb').rglob('*'))[:10]

def test_a_gpu_out_of_memory_is_one_line(monkeypatch, capsys):
    import chadgpt.cli as cli
    def oom(*a, **k): raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(cli, 'train', oom)
    assert cli.main(['train', '--batch-size', '64', '--grad-accum', '2', '--home', '/nonexistent']) == 2
    err = capsys.readouterr().err
    assert "the GPU ran out of memory at --batch-size 64: lower it and raise --grad-accum" in err and "128 sequences" in err
    assert err.count('\n') == 1, err

def test_bench_prints_a_table_and_writes_json(tmp_path):
    r = chadgpt('bench', '--config', 'small', '--steps', '1', '--tokens', '8', '--no-compile', '--json', tmp_path/'b.json')
    assert r.returncode == 0, r.stderr
    assert 'float32   heads     eager' in r.stdout and 'KV cache speed-up at 8 tokens' in r.stdout
    res = json.loads((tmp_path/'b.json').read_text())
    dtypes = {'float32', 'bfloat16'} if cpu_has_bf16() else {'float32'}     # bf16 only where it is native
    assert set(res['peak_tflops']) == dtypes and len(res['train']) == 2 * len(dtypes)
    assert all(row['tokens_per_s'] > 0 for row in res['train'])
    assert 'decoding against the memory floor' in r.stdout                 # both presets, each dtype
    assert {(f['arch'], f['dtype']) for f in res['floor']} == {(a, d) for a in ('lecture', 'modern') for d in dtypes}

# Every bad input is run through `chadgpt.cli.main` in one process (a process per case spent most of the time
# importing torch); two of them also go through the installed console script, which is what a user types.
DRIVER = """
import contextlib, io, json, os, sys
from chadgpt.cli import main
results = []
home = os.environ['CHADGPT_HOME']
for argv in json.loads(sys.argv[1]):
    argv = [a.replace('HOME/', home + '/') for a in argv]      # files in the test's home
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try: rc = main(argv)
        except SystemExit as e: rc = e.code
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""

@pytest.fixture(scope='module')
def bad_home(tmp_path_factory, shakespeare):
    home = tmp_path_factory.mktemp('bad')
    (home/'data').mkdir()
    shutil.copy(shakespeare, home/'data'/'tinyshakespeare.txt')
    (home/'data'/'empty.txt').write_text('')
    (home/'data'/'latin1.txt').write_bytes('\xe9t\xe9'.encode('latin-1'))
    (home/'data'/'short.txt').write_text('to be or not to be, that is the question' * 2)
    for f, text in CONFIGS.items(): (home/f).write_text(text)
    assert chadgpt('train', '--name', 'tiny', '--max-iters', '2', '--eval-interval', '2', *TINY, home=home).returncode == 0
    return home

@pytest.fixture(scope='module')
def bad_results(bad_home):
    r = subprocess.run([sys.executable, '-c', DRIVER, json.dumps([a for a, _ in BAD])], capture_output=True, text=True,
                       env={**os.environ, 'CHADGPT_HOME': str(bad_home)}, timeout=600)
    assert r.returncode == 0, r.stderr
    return dict(zip(map(tuple, (a for a, _ in BAD)), json.loads(r.stdout)))

@pytest.mark.parametrize('argv,message', BAD, ids=[' '.join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(bad_home, bad_results, argv, message):
    if 'cuda' in argv and torch.cuda.is_available(): pytest.skip("this machine has CUDA")
    rc, stderr = bad_results[tuple(argv)]
    stderr = stderr.replace(str(bad_home) + '/', 'HOME/')
    assert rc == 2, stderr
    assert message in stderr
    assert stderr.count('\n') == 1 and 'Traceback' not in stderr, stderr
    assert not (bad_home/'models'/'..'/'up').exists()

@pytest.mark.parametrize('argv,message', [(['train', '--dataset', 'nosuch'], "unknown dataset 'nosuch'"),
                                          (['frobnicate'], "invalid choice")])
def test_bad_input_from_the_console_script(home, argv, message):
    r = chadgpt(*argv, home=home)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, (r.stdout, r.stderr)
