"""chadgpt export: what transformers loads from the folder computes what chadgpt computes (tokens, float32 logits within
1e-4, greedy text token for token), for each tokenizer kind and odd shapes; what it cannot compute is refused by name."""
import json, shutil
import pytest, torch
from conftest import chadgpt
from chadgpt.checkpoint import load_model
from chadgpt.model import GPTConfig
from chadgpt.train import TrainConfig, arch_configs, train
from chadgpt.chat import sft
from chadgpt.pretrained import export_hf, gpt2_refusal, import_pretrained

transformers = pytest.importorskip('transformers')
QUICK = TrainConfig(max_iters=12, eval_interval=12, eval_iters=1, batch_size=4, device='cpu', dtype='float32')
TEXT = 'First Citizen:\nBefore we'

@pytest.fixture(scope='module')
def home(tmp_path_factory, shakespeare):
    h = tmp_path_factory.mktemp('export')
    (h/'data').mkdir()
    (h/'data'/'plays.txt').write_text(shakespeare.read_text()[:60_000])
    return h

def same(name, home, text=TEXT, new=16):
    "Export model `name` and check transformers against chadgpt on `text`; returns the folder."
    out = export_hf(name, home/'hf'/name, home, overwrite=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    model, tok = load_model(name, home)
    ids = tok.encode(text)
    assert hf_tok(text)['input_ids'] == ids and hf_tok.decode(ids) == text
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x)[0][..., :tok.vocab_size], atol=1e-4, rtol=0)
    mine = model.generate(x, new, temperature=0)[0, len(ids):].tolist()
    theirs = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, do_sample=False, eos_token_id=None,
                         pad_token_id=0)[0, len(ids):].tolist()
    assert theirs == mine
    return out

def test_gpt2_tokenizer_and_back(home):
    "(Odd shapes and the other tokenizer kinds: the export section of the pretrained chapter.)"
    shape = dict(n_layer=2, n_head=5, n_embed=40, qkv_bias=True, tie_weights=False, gelu='tanh', vocab_multiple=64, dropout=0.1)
    train('g', GPTConfig(block_size=40, **shape), QUICK, 'plays.txt', home, tokenizer='gpt2', overwrite=True, progress=False)
    out = same('g', home)
    assert json.loads((out/'config.json').read_text())['eos_token_id'] == 50256
    import_pretrained(out, 'back', home, overwrite=True)                   # and back: chadgpt import of the export
    assert json.loads((home/'models'/'back'/'chadgpt.json').read_text())['format'] == 2
    x = torch.tensor([load_model('g', home)[1].encode(TEXT)])
    torch.testing.assert_close(load_model('back', home)[0](x)[0][..., :50257], load_model('g', home)[0](x)[0][..., :50257])

def test_a_chat_model_keeps_its_special_tokens(home):
    train('base', GPTConfig(block_size=64, n_layer=1, n_head=2, n_embed=32), QUICK, 'plays.txt', home, progress=False,
          overwrite=True)
    conv = {'messages': [{'role': 'user', 'content': 'Who are you?'}, {'role': 'assistant', 'content': 'A player.'}]}
    (home/'data'/'talk.jsonl').write_text((json.dumps(conv) + '\n') * 8)
    sft('chatty', 'base', 'talk.jsonl', QUICK, home, overwrite=True, progress=False)
    out = same('chatty', home, 'Who are you?')
    model, tok = load_model('chatty', home)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    end = tok.special_ids()['<|assistant_end|>']
    assert hf_tok.convert_tokens_to_ids('<|assistant_end|>') == end and hf_tok.eos_token == '<|assistant_end|>'
    assert json.loads((out/'config.json').read_text())['eos_token_id'] == end
    assert hf_tok.decode([end, *tok.encode('Hi')]) == '<|assistant_end|>Hi'

def test_what_gpt2_cannot_compute_is_refused_by_name(home):
    assert "rotary (GPT-2 learns a table of positions)" in gpt2_refusal(arch_configs('modern')[0])
    assert "NanoChat" in gpt2_refusal(arch_configs('modern')[0])
    assert gpt2_refusal(GPTConfig(head_bias=True)) == ("transformers' GPT2LMHeadModel cannot compute this model: head_bias "
                                                        "(GPT-2's output layer has no bias). Export models of GPT-2's design (--arch lecture).")
    assert gpt2_refusal(arch_configs('lecture')[0]) is None
    train('modern', GPTConfig.from_preset('modern', block_size=16, n_layer=1, n_head=2, n_embed=16), QUICK, 'plays.txt', home,
          overwrite=True, progress=False)
    r = chadgpt('export', 'modern', home/'out-modern', home=home)
    assert r.returncode == 2 and 'rotary' in r.stderr and r.stderr.count('\n') == 1, r.stderr
    assert not (home/'out-modern').exists()                                  # nothing written

def test_the_command(home):
    train('lect', GPTConfig(block_size=32, n_layer=1, n_head=2, n_embed=16), QUICK, 'plays.txt', home, overwrite=True,
          progress=False)
    r = chadgpt('export', 'lect', home/'out', home=home)
    assert r.returncode == 0 and 'AutoModelForCausalLM.from_pretrained' in r.stdout, r.stderr
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'} <= {p.name for p in (home/'out').iterdir()}
    with pytest.raises(Exception, match='not empty'): export_hf('lect', home/'out', home)   # not over a folder with files in it
    with pytest.raises(Exception, match='no best checkpoint'): export_hf('lect', home/'out2', home, checkpoint='best')
    r = chadgpt('export', 'lect', home/'models'/'lect', '--overwrite', home=home)      # never into a chadgpt folder
    assert r.returncode == 2 and 'is a chadgpt model folder' in r.stderr, r.stderr
    assert {p.name for p in (home/'models'/'lect').iterdir()} >= {'chadgpt.json', 'tokenizer.chadgpt.json'}
    assert not {'config.json', 'tokenizer.json'} & {p.name for p in (home/'models'/'lect').iterdir()}
