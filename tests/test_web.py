"""The web page in a real browser: Playwright driving Debian's Chromium against `chadgpt serve` on loopback."""
import os, re, shutil
from pathlib import Path
import pytest
from conftest import REPO, Server

CHROMIUM = os.environ.get('CHADGPT_CHROMIUM', '/usr/bin/chromium')
ARTIFACTS = Path(os.environ.get('CHADGPT_ARTIFACTS', REPO/'artifacts'))
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']

@pytest.fixture(scope='module')
def browser():
    sync_api = pytest.importorskip('playwright.sync_api')
    if not Path(CHROMIUM).is_file():
        if os.environ.get('CHADGPT_REQUIRE_BROWSER'): pytest.fail(f"no browser at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"no browser at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()

@pytest.fixture
def page(browser, home):
    server = Server(home)
    ctx = browser.new_context(viewport={'width': 1100, 'height': 1600})
    page = ctx.new_page()
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.goto(server.url + '/')
    page.server, page.js_errors = server, errors
    yield page
    ctx.close(); server.stop()
    assert not errors, f"JavaScript errors: {errors}"

def set_hyperparameters(page, **hp):
    for k, v in hp.items(): page.fill(f'#hp-{k}', str(v))

def test_upload_train_chart_generate(page, shakespeare, tmp_path):
    from playwright.sync_api import expect
    expect(page.locator('#dataset option')).to_have_count(1)                    # shakespeare, built in
    expect(page.locator('#dataset-info')).to_contain_text('1,115,394 characters')
    expect(page.locator('#delete-dataset')).to_be_hidden()                      # a built-in cannot be deleted
    expect(page.locator('#loss-chart')).to_be_hidden()                          # no empty chart before training
    src = tmp_path/'plays.txt'
    src.write_text(shakespeare.read_text()[:60_000])
    page.set_input_files('#upload-file', str(src))
    page.click('#upload-button')
    expect(page.locator('#data-message')).to_contain_text("dataset 'plays.txt' uploaded")
    expect(page.locator('#dataset')).to_have_value('plays.txt')
    expect(page.locator('#dataset-info')).to_contain_text('60,000 characters')
    expect(page.locator('#delete-dataset')).to_be_visible()                     # an upload can be

    expect(page.locator('#hp-n_embed')).to_have_value('128')                   # defaults come from the API schema
    set_hyperparameters(page, n_embed=30, n_head=4)
    expect(page.locator('#train-message')).to_contain_text('must be divisible by n_head')
    expect(page.locator('#train-button')).to_be_disabled()
    set_hyperparameters(page, n_layer=1, n_embed=32, n_head=2, block_size=32, batch_size=8, max_iters=120,
                        eval_interval=20, eval_iters=2, dropout=0)
    page.fill('#model-name', 'webtiny')
    expect(page.locator('#train-button')).to_be_enabled()
    page.click('#train-button')
    expect(page.locator('#train-message')).to_contain_text('training webtiny on plays.txt')
    expect(page.locator('#loss-chart circle.val')).not_to_have_count(0, timeout=60_000)   # the chart fills in live
    expect(page.locator('#loss-chart')).to_be_visible()
    expect(page.locator('#train-message')).to_contain_text('done: webtiny trained to step 120', timeout=120_000)
    expect(page.locator('#loss-chart circle.val')).to_have_count(7)               # steps 0, 20, ..., 120
    expect(page.locator('#train-status')).to_contain_text('step 120/120')
    expect(page.locator('#model-list tr[data-name="webtiny"]')).to_contain_text('done')

    page.select_option('#gen-model', 'webtiny')
    page.fill('#gen-tokens', '300'); page.fill('#gen-seed', '5'); page.fill('#gen-prompt', 'ROMEO:')
    page.click('#generate-button')
    expect(page.locator('#gen-message')).to_have_text('300 characters', timeout=60_000)
    text = page.locator('#gen-output').text_content()
    assert text.startswith('ROMEO:') and len(text) == len('ROMEO:') + 300
    expected = page.server.client.get('/lm/webtiny/eval', params={'tokens': 300, 'seed': 5, 'prompt': 'ROMEO:',
                                                                   'temperature': 0.8}).json()['eval']
    assert text == 'ROMEO:' + expected                                         # the streamed text is the model's
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS/'web-page.png'), full_page=True)

def test_stop_training_and_errors_on_the_page(page):
    from playwright.sync_api import expect
    set_hyperparameters(page, n_layer=1, n_embed=32, n_head=2, block_size=32, batch_size=8, max_iters=100000, eval_interval=50)
    page.fill('#model-name', 'long')
    page.click('#train-button')
    expect(page.locator('#cancel-button')).to_be_enabled()
    expect(page.locator('#train-status')).to_contain_text(re.compile(r'running · step [1-9]'), timeout=60_000)
    page.click('#cancel-button')
    expect(page.locator('#train-message')).to_contain_text('stopped at step', timeout=60_000)
    expect(page.locator('#model-list tr[data-name="long"]')).to_contain_text('cancelled')
    page.select_option('#gen-model', 'long')
    page.fill('#gen-prompt', 'snow \u2603')
    page.click('#generate-button')
    expect(page.locator('#gen-message')).to_contain_text('not in the vocabulary')   # the server's message, shown
    page.fill('#model-name', '../x')
    expect(page.locator('#train-button')).to_be_disabled()

def test_tokenizer_choice_and_readable_labels(page):
    from playwright.sync_api import expect
    expect(page.locator('#hp-label-n_layer')).to_contain_text('Number of attention layers')
    expect(page.locator('#hp-label-n_layer code')).to_have_text('n_layer')           # the API's name beside it
    expect(page.locator('#hp-label-vocab_size')).to_be_hidden()
    page.select_option('#tokenizer', 'bpe')
    expect(page.locator('#hp-label-vocab_size')).to_be_visible()
    page.fill('#hp-vocab_size', '100')
    expect(page.locator('#train-message')).to_contain_text('vocab_size must be at least 256')
    page.fill('#hp-vocab_size', '512')
    set_hyperparameters(page, n_layer=1, n_embed=32, n_head=2, block_size=32, batch_size=8, max_iters=20,
                        eval_interval=10, eval_iters=2, dropout=0)
    page.fill('#model-name', 'webbpe')
    page.click('#train-button')
    expect(page.locator('#train-message')).to_contain_text('done: webbpe trained to step 20', timeout=120_000)
    expect(page.locator('#train-status')).to_contain_text('bits/byte')
    assert page.server.client.get('/lm/webbpe').json()['tokenizer'] == {'type': 'bpe', 'vocab_size': 512}

def test_every_setting_has_a_control_and_a_new_one_appears(page, monkeypatch, home):
    "The form is the API's schema: every setting gets its labelled control, a setting added to a config class too."
    from playwright.sync_api import expect
    import dataclasses, json
    from fastapi.testclient import TestClient
    import chadgpt.train
    from chadgpt.core import setting
    from chadgpt.api import create_app
    props = page.server.client.get('/openapi.json').json()['components']['schemas']['Hyperparameters']['properties']
    expect(page.locator('#hyperparameters label, #more-hyperparameters label')).to_have_count(len(props) - 1)   # arch: its own
    for k, p in props.items():
        if k != 'arch': expect(page.locator(f'#hp-label-{k}')).to_contain_text(p['title'])
    expect(page.locator('#more-hyperparameters')).to_be_hidden()                     # folded away until opened
    page.click('#more-settings summary')
    page.select_option('#hp-rotary', 'false')
    page.fill('#hp-beta2', '1')
    expect(page.locator('#train-message')).to_contain_text('beta2 must be less than 1')
    page.fill('#hp-beta2', '')

    @dataclasses.dataclass
    class Smoothed(chadgpt.train.TrainConfig):
        label_smoothing: float = setting(0.0, 'Label smoothing', "spread over the other tokens", lo=0, hi=0.5, group='training')
    monkeypatch.setattr(chadgpt.train, 'TrainConfig', Smoothed)
    schema = TestClient(create_app(home, allowed_hosts=['testserver'])).get('/openapi.json').json()
    sent = []
    page.route('**/openapi.json', lambda route: route.fulfill(json=schema))
    def capture(route):
        sent.append(json.loads(route.request.post_data))
        route.fulfill(status=422, json={'detail': 'captured'})
    page.route('**/lm/*/train', capture)
    page.reload()
    page.click('#more-settings summary')
    expect(page.locator('#hp-label-label_smoothing')).to_contain_text('Label smoothing')
    page.fill('#hp-label_smoothing', '0.6')
    expect(page.locator('#train-message')).to_contain_text('label_smoothing must be at most 0.5')
    page.fill('#hp-label_smoothing', '0.25')
    page.select_option('#hp-qk_norm', 'true')
    expect(page.locator('#train-button')).to_be_enabled()
    page.click('#train-button')
    expect(page.locator('#train-message')).to_contain_text('captured')                # the server's refusal, kept in view
    hp = sent[0]['hyperparameters']
    assert hp['label_smoothing'] == 0.25 and hp['qk_norm'] is True and 'rotary' not in hp and 'min_lr' not in hp

def test_fine_tune_and_chat_on_the_page(page):
    "Fine-tune a model to chat from the page, then chat with it in the chat tab, the reply streamed."
    from playwright.sync_api import expect
    import json
    c = page.server.client
    c.post('/lm/base/train', json={'hyperparameters': {'n_layer': 1, 'n_embed': 32, 'n_head': 2, 'block_size': 32, 'batch_size': 8,
                                                       'max_iters': 20, 'eval_interval': 10, 'eval_iters': 2}})
    page.server.wait('base')
    conv = json.dumps({'messages': [{'role': 'user', 'content': 'Who are you?'}, {'role': 'assistant', 'content': 'A player.'}]})
    assert c.post('/ds/upload', files={'file': ('talk.jsonl', ((conv + '\n') * 20).encode())}).status_code == 201
    page.reload()
    page.click('#sft summary')
    expect(page.locator('#sft-data option[value="talk.jsonl"]')).to_have_count(1)
    page.select_option('#sft-base', 'base'); page.select_option('#sft-data', 'talk.jsonl')
    page.fill('#sft-steps', '80'); page.fill('#sft-lr', '0.003'); page.fill('#model-name', 'webchat')
    page.click('#sft-button')
    expect(page.locator('#train-message')).to_contain_text('done: webchat trained to step 80', timeout=120_000)
    assert c.get('/lm/webchat').json()['config']['task'] == 'sft'
    page.click('#tab-chat')
    expect(page.locator('#generate')).to_be_hidden()
    expect(page.locator('#chat-model option')).to_have_count(1)                  # only the model that can chat
    page.fill('#chat-temperature', '0')
    page.fill('#chat-input', 'Who are you?'); page.press('#chat-input', 'Enter')
    expect(page.locator('.turn.assistant')).to_have_text('A player.', timeout=60_000)
    expect(page.locator('.turn.user')).to_have_text('Who are you?')
    expect(page.locator('#chat-input')).to_have_value('')
    page.fill('#chat-input', 'café'); page.click('#chat-send')                   # a character the model never saw
    expect(page.locator('#chat-message')).to_contain_text("character 'é'")
    expect(page.locator('#chat-input')).to_have_value('café')                    # kept, to edit
    expect(page.locator('.turn')).to_have_count(2)
    page.screenshot(path=str(ARTIFACTS/'web-chat.png'), full_page=True)
    page.click('#chat-reset')
    expect(page.locator('.turn')).to_have_count(0)
