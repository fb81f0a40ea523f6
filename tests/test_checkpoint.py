"""A crash at any point of a checkpoint save leaves a model that loads and resumes."""
import os
from dataclasses import replace
import pytest
import chadgpt.train as T
from chadgpt.model import GPTConfig
from chadgpt.train import NEXT_OPTIMIZER, TrainConfig, checkpoint_step, load_model, read_json, read_metrics, train

TINY = GPTConfig(block_size=16, n_layer=1, n_head=2, n_embed=16)
CFG = TrainConfig(batch_size=4, max_iters=20, eval_interval=10, eval_iters=1, device='cpu')

def crash_on(monkeypatch, when):
    "Make `os.replace` raise (as a kill would stop the process) when `when(src, dst)` holds."
    real = os.replace
    def replace_(src, dst):
        if when(str(src), str(dst)): raise KeyboardInterrupt("killed")
        return real(src, dst)
    monkeypatch.setattr(T.os, 'replace', replace_)

@pytest.mark.parametrize('point', ['before weights', 'before optimizer swap', 'before state'])
def test_crash_during_save_then_resume(home, monkeypatch, point):
    out = train('m', TINY, CFG, home=home, progress=False)
    when = {'before weights': lambda s, d: d.endswith('model.safetensors'),
            'before optimizer swap': lambda s, d: s.endswith(NEXT_OPTIMIZER),
            'before state': lambda s, d: d.endswith('state.json') and read_json(out/'state.json')['step'] == 20
                                         and (out/'model.safetensors').stat().st_mtime > (out/'chadgpt.json').stat().st_mtime}[point]
    crash_on(monkeypatch, when)
    with pytest.raises(KeyboardInterrupt):
        train('m', home=home, resume=True, train_config=replace(CFG, max_iters=30), progress=False)
    monkeypatch.undo()
    expected = 20 if point == 'before weights' else 30               # the weights decide
    assert checkpoint_step(out) == expected
    model, tok = load_model('m', home)                                # loadable at once
    train('m', home=home, resume=True, train_config=replace(CFG, max_iters=40), progress=False)
    assert read_json(out/'state.json')['step'] == 40 and read_json(out/'state.json')['status'] == 'done'
    assert [r['step'] for r in read_metrics('m', home)] == [0, 10, 20, 30, 40]
    assert not (out/NEXT_OPTIMIZER).exists()
