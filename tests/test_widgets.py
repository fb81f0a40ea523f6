"""The notebook panels driven as a person would: set values, click, wait for the background work."""
import html, time
from datetime import datetime, timezone
import pytest, torch
from chadgpt.widgets import AttentionExplorer, SamplePanel, TrainPanel
from chadgpt.train import load_model
from chadgpt.sample import generate_text

TINY = dict(n_layer=1, n_embed=32, n_head=2, block_size=32, batch_size=8, max_iters=40, eval_interval=20, eval_iters=2)

def upload(panel, name, data: bytes):
    panel.upload.value = ({'name': name, 'type': 'text/plain', 'size': len(data), 'content': memoryview(data),
                           'last_modified': datetime.now(timezone.utc)},)

def test_train_sample_and_explore(home):
    panel = TrainPanel(home, name='w', poll_interval=0.05, **TINY)
    assert not panel.train_button.disabled and panel.message.value == ''
    panel.train_button.click()
    assert panel.train_button.disabled and not panel.stop_button.disabled   # no second run while this one trains
    st = panel.wait(120)
    assert st['state'] == 'done' and st['step'] == 40 and panel.progress.value == 40
    assert [m['step'] for m in panel.metrics] == [0, 20, 40]
    val_line = panel.fig.axes[0].lines[-1]
    assert list(val_line.get_xdata()) == [0, 20, 40] and panel.plot.value[:4] == b'\x89PNG'
    assert 'done' in panel.message.value and not panel.train_button.disabled

    sp = SamplePanel('w', home=home, prompt='KING')
    sp.seed.value, sp.length.value, sp.temperature.value, sp.top_k.value = 11, 150, 1.0, 5
    sp.generate_button.click()
    assert sp.wait(60) == 'KING' + generate_text(*load_model('w', home), 'KING', 150, 1.0, top_k=5, seed=11)
    assert not sp.generate_button.disabled and sp.message.value == ''
    assert 'column-reverse' in sp.output.value and html.escape(sp.text[-40:]) in sp.output.value   # follows the stream

    ex = AttentionExplorer('w', 'KING RICHARD', home=home)
    assert ex.maps.shape == (1, 2, 12, 12) and ex.image.value[:4] == b'\x89PNG'
    assert torch.allclose(ex.weights.sum(-1), torch.ones(12))

def test_invalid_settings_cannot_train(home):
    panel = TrainPanel(home, name='bad', **TINY)
    for control, value, words in [('n_head', 3, 'divisible by n_head'), ('dropout', 0.95, None), ('learning_rate', 2.0, None)]:
        panel.controls[control].value = value
        if words: assert panel.train_button.disabled and words in panel.message.value
        panel.controls[control].value = TINY.get(control, panel.controls[control].min if control != 'learning_rate' else 1e-3)
    assert panel.controls['learning_rate'].value <= 1.0          # clamped to its range
    upload(panel, 'short.txt', b'just a few words\n')
    assert panel.dataset.value == 'short.txt'
    panel.train_button.click()                                   # block_size 32 is longer than this text
    assert 'short.txt' in panel.message.value and panel.status is None
    assert not (home/'models'/'bad').exists()
    upload(panel, 'bin.txt', b'\xff\xfe\xfa')
    assert 'UTF-8' in panel.message.value and 'bin.txt' not in [v for _, v in panel.dataset.options]
    with pytest.raises(ValueError, match='unknown hyperparameter'): TrainPanel(home, n_embd=3)

def test_stop_keeps_a_resumable_checkpoint(home):
    panel = TrainPanel(home, name='s', poll_interval=0.05, **{**TINY, 'max_iters': 100_000})
    panel.start()
    while panel.status['step'] < 5: time.sleep(0.05)
    panel.stop_button.click()
    st = panel.wait(60)
    assert st['state'] == 'cancelled' and st['resumable'] and 'checkpoint is saved' in panel.message.value
    assert (home/'models'/'s'/'model.safetensors').is_file()

def test_tokenizer_choice_labels_and_bits_per_byte(home):
    panel = TrainPanel(home, name='t', poll_interval=0.05, **TINY)
    labels = [row.children[0].value for row in panel.children[2].children]
    assert labels[:4] == ['Context length (tokens)', 'Number of attention layers', 'Number of attention heads', 'Embedding size']
    assert panel.bpe_vocab.layout.display == 'none'                 # the size only matters for a trained BPE
    panel.tokenizer.value = 'bpe'
    assert panel.bpe_vocab.layout.display is None and panel.tokenizer_spec() == 'bpe:4096'
    panel.bpe_vocab.value = 100                                     # clamped to the range a BPE can have
    assert panel.bpe_vocab.value == 256
    panel.bpe_vocab.value = 512
    panel.train_button.click()
    st = panel.wait(120)
    assert st['state'] == 'done' and st['val_bpb'] > 0 and 'bits/byte' in panel.stats.value
    assert load_model('t', home)[1].vocab_size == 512
    ex = AttentionExplorer('t', 'KING RICHARD', home=home)          # labels are the BPE tokens, not characters
    assert ex.maps.shape[-1] == len(ex.tokenizer.encode('KING RICHARD')) < 12

def test_arch_choice_sets_the_preset(home):
    panel = TrainPanel(home, name='a', **TINY)
    mcfg, tcfg = panel.configs()
    assert panel.arch.value == 'modern' and mcfg.rotary and tcfg.optimizer == 'muon'
    assert panel.controls['learning_rate'].value == tcfg.learning_rate == 4e-3      # the preset's own settings shown
    panel.arch.value = 'lecture'
    assert panel.controls['learning_rate'].value == 2e-3 and panel.controls['max_iters'].value == 3000
    assert panel.controls['n_layer'].value == 1                                     # the shape is the user's
    mcfg, tcfg = panel.configs()
    assert not mcfg.rotary and mcfg.tie_weights and tcfg.optimizer == 'adamw'

def test_panels_show_nothing_unfinished(home):
    panel = TrainPanel(home, name='f', poll_interval=0.05, **TINY)
    assert panel.plot.layout.display == 'none' and not panel.plot.value            # no empty image before a run
    upload(panel, 'bin.txt', b'\xff\xfe\xfa')
    assert 'UTF-8' in panel.message.value and panel.upload.value == ()            # the counter does not keep "(1)"
    panel.train_button.click(); panel.wait(120)
    assert panel.plot.layout.display is None and panel.plot.value[:4] == b'\x89PNG'
    assert panel.name.style.description_width == 'initial'                         # "model name" is not cut off
    sp = SamplePanel('f', home=home)
    assert all(w.style.description_width == 'initial' for w in (sp.temperature, sp.top_k, sp.seed))
    ex = AttentionExplorer('f', 'KING RICHARD', home=home)                        # one layer: no 0-0 slider
    assert ex.layer.layout.display == 'none' and ex.head.layout.display is None
    ex.text.value = ''
    assert 'type some text' in ex.message.value and ex.image.layout.display == 'none'   # no stale heatmap
    ex.text.value = 'KING'
    assert ex.image.layout.display is None and ex.message.value == ''
    png_width = int.from_bytes(ex.image.value[16:20], 'big')                      # drawn at twice the size shown,
    assert abs(png_width / 2 - int(ex.image.layout.width.removesuffix('px'))) <= 1  # never stretched

def test_existing_model_needs_resume_or_replace(home):
    panel = TrainPanel(home, name='r', poll_interval=0.05, **TINY)
    panel.train_button.click(); assert panel.wait(120)['state'] == 'done'
    first = (home/'models'/'r'/'model.safetensors').read_bytes()
    panel.train_button.click()                                               # same name again: refused, model kept
    assert "a model named 'r' exists" in html.unescape(panel.message.value) and panel.status['state'] == 'done'
    assert (home/'models'/'r'/'model.safetensors').read_bytes() == first
    panel.resume.value, panel.controls['max_iters'].value = True, 60          # continue it to step 60
    panel.train_button.click()
    st = panel.wait(120)
    assert st['state'] == 'done' and st['step'] == 60
    assert [m['step'] for m in panel.metrics][-1] == 60
    panel.resume.value, panel.overwrite.value, panel.controls['max_iters'].value = False, True, 20
    panel.train_button.click()                                               # replace: trained afresh
    assert panel.wait(120)['step'] == 20
