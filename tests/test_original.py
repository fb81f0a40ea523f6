"""The original ChadGPT front-end and request scripts against `chadgpt serve`, exactly as their users send them."""
import httpx, pytest
from conftest import Server

FRONTEND = 'http://localhost:3000'          # where the original React front-end runs (npm start)

# requests/train_cpu.sh of the original repository, both versions of its body, unchanged
TRAIN_CPU_WORD = {"dataset": "shakespeare.txt", "tokenizer": "word",
                  "hyperparameters": {"vocab_size": 65, "block_size": 32, "n_heads": 3, "n_embed": 96, "n_layer": 3,
                                      "dropout": 0.2, "batch_size": 4, "max_iters": 3000, "learning_rate": 1e-3,
                                      "eval_interval": 500, "eval_iters": 100}}
TRAIN_CPU_CHAR = {**TRAIN_CPU_WORD, "tokenizer": "character",
                  "hyperparameters": {**TRAIN_CPU_WORD['hyperparameters'], "eval_iters": 200}}

@pytest.fixture
def frontend_server(home):
    s = Server(home, '--cors-origin', FRONTEND)          # the command the README's section gives
    yield s
    s.stop()

def test_frontend_origin_with_the_flag(frontend_server):
    c = frontend_server.client
    pre = c.options('/lm/shakespeare_small/train', headers={'Origin': FRONTEND, 'Access-Control-Request-Method': 'POST',
                                                            'Access-Control-Request-Headers': 'content-type'})
    assert pre.status_code == 200 and pre.headers['access-control-allow-origin'] == FRONTEND
    r = c.get('/lm', headers={'Origin': FRONTEND, 'Sec-Fetch-Site': 'same-site'})
    assert r.status_code == 200 and r.headers['access-control-allow-origin'] == FRONTEND
    assert 'may use this server' in frontend_server.output() and FRONTEND in frontend_server.output()

def test_frontend_origin_without_the_flag(home):
    s = Server(home)
    try:
        r = s.client.post('/lm/shakespeare_small/train', json=TRAIN_CPU_CHAR, headers={'Origin': FRONTEND})
        assert r.status_code == 403 and '--cors-origin' in r.json()['detail']
        assert 'access-control-allow-origin' not in r.headers
        assert '--cors-origin http://localhost:3000' in s.output()         # the startup line says how
    finally: s.stop()

@pytest.mark.parametrize('body', [TRAIN_CPU_WORD, TRAIN_CPU_CHAR], ids=['word', 'character'])
def test_train_cpu_script_body(frontend_server, body):
    c = frontend_server.client                              # a fresh home: 'shakespeare.txt' is the built-in
    r = c.post('/lm/shakespeare_small/train', json=body)
    assert r.status_code == 202, r.text
    st = frontend_server.wait('shakespeare_small', until=lambda st: st['state'] == 'running' and st['step'] > 0)
    assert c.post('/lm/shakespeare_small/cancel').status_code == 200
    assert frontend_server.wait('shakespeare_small')['state'] == 'cancelled'
    info = c.get('/lm/shakespeare_small').json()
    assert info['config']['dataset'] == 'shakespeare' and info['config']['model']['n_head'] == 3

def test_eval_cpu_script(frontend_server):
    c = frontend_server.client
    body = {**TRAIN_CPU_CHAR, 'hyperparameters': {**TRAIN_CPU_CHAR['hyperparameters'], 'max_iters': 20, 'eval_interval': 10,
                                                  'eval_iters': 2}}
    assert c.post('/lm/shakespeare_small/train', json=body).status_code == 202
    assert frontend_server.wait('shakespeare_small')['state'] == 'done'
    r = c.get('/lm/shakespeare_small/eval')                   # curl -X GET .../eval | jq -r .eval
    assert r.status_code == 200 and isinstance(r.json()['eval'], str) and r.json()['eval']

def test_head_size_refusal_says_what_works(frontend_server):
    body = {**TRAIN_CPU_CHAR, 'hyperparameters': {**TRAIN_CPU_CHAR['hyperparameters'], 'n_heads': 5}}
    r = frontend_server.client.post('/lm/m/train', json=body)
    assert r.status_code == 422 and 'use n_head 4 or 6, or n_embed 95 or 100' in r.text
