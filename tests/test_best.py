"""--keep-best and --early-stop: the best validation loss's weights kept beside the last, and a run that stops when the
validation loss no longer improves."""
import pytest, torch
from safetensors import safe_open
from conftest import TINY, chadgpt
from chadgpt.checkpoint import BEST, load_model, read_json, read_metrics
from chadgpt.model import GPTConfig
from chadgpt.train import TrainConfig, train

SMALL = GPTConfig(block_size=16, n_layer=1, n_head=2, n_embed=32)

@pytest.fixture
def shifted(home):
    "A text whose validation part (the last tenth) has letters the training part never has: val loss only rises."
    (home/'data'/'shift.txt').write_text('ab' * 4500 + 'cd' * 500)
    return home

def test_early_stop_and_the_best_weights(shifted):
    home = shifted
    cfg = TrainConfig(max_iters=300, eval_interval=5, eval_iters=2, batch_size=8, learning_rate=1e-2, keep_best=True,
                      early_stop=2, device='cpu')
    out = train('shift', SMALL, cfg, 'shift.txt', home, progress=False)
    st = read_json(out/'state.json')
    assert (st['status'], st['step'], st['best_step'], st['evals_since_best'], st['stopped_early']) == ('done', 10, 0, 2, True), st
    with safe_open(out/BEST, 'pt') as f: assert f.metadata()['step'] == '0'
    best, last = load_model(out, checkpoint='best')[0], load_model(out)[0]
    assert not torch.equal(best.lm_head.weight, last.lm_head.weight)
    assert [m['step'] for m in read_metrics(out)] == [0, 5, 10]
    # the command line: the best weights sample, a model without them says how to get them
    r = chadgpt('sample', 'shift', '--checkpoint', 'best', '--tokens', 5, '--seed', 1, home=home)
    assert r.returncode == 0, r.stderr
    train('plain', SMALL, TrainConfig(max_iters=2, eval_interval=2, eval_iters=1, batch_size=4, device='cpu'), 'shift.txt', home,
          progress=False)
    r = chadgpt('sample', 'plain', '--checkpoint', 'best', home=home)
    assert r.returncode == 2 and "'plain' has no best checkpoint; train it with --keep-best" in r.stderr, r.stderr

def test_the_command_line_says_what_early_stopping_did(shifted):
    r = chadgpt('train', '--name', 's', '--dataset', 'shift.txt', *TINY, '--block-size', 16, '--max-iters', 300,
                '--eval-interval', 5, '--learning-rate', 1e-2, '--early-stop', 1, '--keep-best', '--arch', 'lecture', home=shifted)
    assert r.returncode == 0, r.stderr
    assert "stopped early: no lower validation loss in the last 1 evaluations (the best" in r.stdout, r.stdout
    assert "are kept too: --checkpoint best" in r.stdout
    assert read_json(shifted/'models'/'s'/'chadgpt.json')['train']['early_stop'] == 1
