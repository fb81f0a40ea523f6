"""One settings schema: the command line, REST, the panels and the page accept the same settings, with the same
bounds and labels, and a setting added to a config class appears in all four."""
import dataclasses, shutil
import pytest
from fastapi.testclient import TestClient
import chadgpt.train
from chadgpt.core import Setting, setting
from chadgpt.train import TrainConfig, all_settings, split_settings
from chadgpt.cli import build_parser, _configs
from chadgpt.api import create_app, hyperparameters_model, request_configs, request_model
from chadgpt.widgets import TrainPanel

EXCEPTIONS = {'device', 'dtype', 'compile'}          # the machine's: see the table in the chapter *Training*

def train_flags(parser) -> dict:
    "The train command's options: dest -> argparse action."
    sub = next(a for a in parser._actions if a.dest == 'command').choices['train']
    return {a.dest: a for a in sub._actions}

def cli_accepts(s:Setting, value) -> bool:
    try: build_parser().parse_args(['train', '--' + s.name.replace('_', '-'), str(value).lower() if s.type is bool else str(value)])
    except SystemExit: return False
    return True

def rest_accepts(s:Setting, value, model=None) -> bool:
    other = {'n_head': 1} if s.name == 'n_embed' else {}      # every n_embed is divisible by one head
    try: (model or hyperparameters_model()).model_validate({s.name: value, **other})
    except ValueError: return False
    return True

def probes(s:Setting) -> list:
    "Values at and just past each bound, and each choice plus one that is none."
    if s.choices: return [*s.choices, 'nonsense']
    if s.type is bool: return []
    out = []
    for b, open_, step in ((s.lo, s.lo_open, -1), (s.hi, s.hi_open, 1)):
        if b is None: continue
        eps = 1 if s.type is int else max(abs(b) * 1e-9, 1e-9)
        out += [b, b + step * eps] if not open_ else [b, b - step * eps]
    return [s.type(v) if s.type is int else v for v in out]

@pytest.fixture(scope='module')
def panel_home(tmp_path_factory, shakespeare):
    h = tmp_path_factory.mktemp('home')
    (h/'data').mkdir(); shutil.copy(shakespeare, h/'data'/'tinyshakespeare.txt')
    return h

@pytest.fixture(scope='module')
def panel(panel_home): return TrainPanel(panel_home)

def client(home): return TestClient(create_app(home, allowed_hosts=['testserver']))

def valid(s:Setting, v) -> bool:
    try: s.check(v)
    except ValueError: return False
    return True

def test_every_interface_has_the_same_settings(panel, panel_home):
    names = lambda where: {s.name for s in all_settings(where)}
    everything = names(None)
    assert names('rest') == names('panel') == names('page') == everything - EXCEPTIONS
    assert names('cli') == everything
    assert {'device', 'dtype'} <= set(request_model().model_fields)           # REST takes those as the request's own fields
    flags = train_flags(build_parser())
    assert everything <= set(flags)
    assert set(hyperparameters_model().model_fields) == names('rest') | {'arch', 'vocab_size'}
    assert set(panel.controls) == names('panel')
    schema = client(panel_home).get('/openapi.json').json()['components']['schemas']['Hyperparameters']['properties']
    assert set(schema) - {'arch', 'vocab_size'} == names('page')

@pytest.mark.parametrize('s', all_settings(), ids=lambda s: s.name)
def test_same_bounds_choices_and_labels(s, panel):
    flag = train_flags(build_parser())[s.name]
    assert s.label in flag.help
    for v in probes(s):                                  # both directions: what one refuses, every other refuses
        want = valid(s, v)
        assert cli_accepts(s, v) == want, (s.name, v)
        if 'rest' in s.interfaces: assert rest_accepts(s, v) == want, (s.name, v)
    if 'rest' not in s.interfaces: return
    prop = hyperparameters_model().model_json_schema()['properties'][s.name]
    assert prop['title'] == s.label
    t = next(x for x in prop['anyOf'] if x.get('type') != 'null')
    if s.choices: assert tuple(t['enum']) == s.choices
    if s.lo is not None: assert t['exclusiveMinimum' if s.lo_open else 'minimum'] == s.lo
    if s.hi is not None: assert t['exclusiveMaximum' if s.hi_open else 'maximum'] == s.hi
    control = panel.controls[s.name]
    if s.type in (int, float) and not s.optional: assert (control.min, control.max) == (s.lo, s.hi)
    if s.choices: assert tuple(control.options) == s.choices

def test_the_same_values_give_the_same_configs(home):
    values = {'n_layer': 2, 'n_embed': 48, 'n_head': 3, 'rotary': False, 'activation': 'relu', 'min_lr': 1e-4, 'lr_decay': False,
              'beta2': 0.95, 'learning_rate': 1e-3, 'grad_accum': 2}
    argv = ['train', '--arch', 'lecture']
    for k, v in values.items():
        flag = '--' + k.replace('_', '-')
        argv += [flag] if v is True else ['--no-' + k.replace('_', '-')] if v is False else [flag, str(v)]
    cli = _configs(build_parser().parse_args(argv))
    rest = request_configs(request_model().model_validate({'hyperparameters': {'arch': 'lecture', **values}}))
    panel = TrainPanel(home)
    panel.arch.value = 'lecture'
    for k, v in values.items(): panel.controls[k].value = str(v) if k == 'min_lr' else v
    assert cli == rest == panel.configs() == chadgpt.train.arch_configs('lecture', *split_settings(values))

def test_old_names_and_old_configs():
    m, t = chadgpt.train.arch_configs('lecture', *split_settings({'n_heads': 2, 'n_embed': 64}))
    assert m.n_head == 2
    assert request_model().model_validate({'hyperparameters': {'n_heads': 2, 'n_embed': 64}}).hyperparameters.n_head == 2
    assert TrainConfig.from_dict({'max_iters': 5}).beta2 == TrainConfig().beta2      # a setting saved before: its default
    with pytest.raises(ValueError, match='another name for n_head'): chadgpt.train.GPTConfig.from_dict({'n_heads': 2, 'n_head': 2})

@dataclasses.dataclass
class SmoothedConfig(TrainConfig):
    "The fixture: training gains one setting, defined once."
    label_smoothing: float = setting(0.0, 'Label smoothing', "share of each target's probability spread over the others",
                                     lo=0, hi=0.5, step=0.05, group='training')

def test_a_new_setting_appears_in_all_four(home, monkeypatch):
    monkeypatch.setattr(chadgpt.train, 'TrainConfig', SmoothedConfig)
    s = {x.name: x for x in all_settings()}['label_smoothing']
    # the command line
    flag = train_flags(build_parser())['label_smoothing']
    assert 'Label smoothing' in flag.help and '--label-smoothing' in flag.option_strings
    assert _configs(build_parser().parse_args(['train', '--label-smoothing', '0.1']))[1].label_smoothing == 0.1
    assert not cli_accepts(s, 0.6) and cli_accepts(s, 0.5)
    # REST, and so the page, which builds its form from this schema
    c = client(home)
    prop = c.get('/openapi.json').json()['components']['schemas']['Hyperparameters']['properties']['label_smoothing']
    assert prop['title'] == 'Label smoothing' and prop['anyOf'][0]['maximum'] == 0.5 and prop['examples'] == [0.0]
    r = c.post('/lm/x/train', json={'hyperparameters': {'label_smoothing': 0.6}})
    assert r.status_code == 422 and 'label_smoothing' in r.json()['detail']
    req = request_model().model_validate({'hyperparameters': {'label_smoothing': 0.25}})
    assert request_configs(req)[1].label_smoothing == 0.25
    # the panels
    panel = TrainPanel(home, label_smoothing=0.2)
    control = panel.controls['label_smoothing']
    assert (control.min, control.max, control.value) == (0, 0.5, 0.2)
    more = panel.children[3].children[0]                                     # folded under "More settings"
    assert 'Label smoothing' in [row.children[0].value for row in more.children]
    assert panel.configs()[1].label_smoothing == 0.2
    control.value = 0.7
    assert control.value == 0.5                                                  # clamped to its bound
