"""The REST service end to end: a real `chadgpt serve` process on a loopback port, driven with httpx."""
import json, os, signal, socket, subprocess, shutil, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import httpx, psutil, pytest
from conftest import Server

# a model small enough to train in a couple of seconds on a 2-core CPU
TINY = {'block_size': 32, 'n_head': 2, 'n_embed': 32, 'n_layer': 1, 'batch_size': 8, 'eval_iters': 2}

# the body of the original ChadGPT example request, unchanged (the lecture configuration)
SEED_BODY = {"dataset": "shakespeare", "tokenizer": "character",
             "hyperparameters": {"vocab_size": 65, "block_size": 256, "n_heads": 6, "n_embed": 384, "n_layer": 6,
                                 "dropout": 0.2, "batch_size": 64, "max_iters": 5000, "learning_rate": 3e-4,
                                 "eval_interval": 500, "eval_iters": 200}}

@pytest.fixture
def server(home):
    s = Server(home)
    yield s
    s.stop()

@pytest.fixture(scope='module')
def shared_server(tmp_path_factory, shakespeare):
    "One server for tests whose requests change nothing."
    home = tmp_path_factory.mktemp('home')
    (home/'data').mkdir()
    shutil.copy(shakespeare, home/'data'/'tinyshakespeare.txt')
    s = Server(home)
    yield s
    s.stop()

def train_body(dataset='shakespeare', **hp):
    return {'dataset': dataset, 'tokenizer': 'character', 'hyperparameters': {**TINY, **hp}}

def sse_events(lines):
    "Parse Server-Sent Events into `(event, data)` pairs."
    event, out = 'message', []
    for line in lines:
        if line.startswith('event:'): event = line[6:].strip()
        elif line.startswith('data:'): out.append((event, json.loads(line[5:]))); event = 'message'
    return out

def test_upload_train_status_eval_delete(server, shakespeare):
    c = server.client
    assert c.get('/ds').json() == ['shakespeare']           # its file in data/ is the built-in, not listed twice
    text = shakespeare.read_text()[:50_000]
    r = c.post('/ds/upload', files={'file': ('plays.txt', text.encode())})
    assert r.status_code == 201, r.text
    assert 'plays.txt' in r.json()['message'] and 'plays.txt' in c.get('/ds').json()
    info = c.get('/ds/plays.txt').json()
    assert info['characters'] == len(text) and info['vocab_size'] == len(set(text))

    r = c.post('/lm/tiny/train', json=train_body('plays.txt', max_iters=40, eval_interval=20))
    assert r.status_code == 202, r.text
    assert r.json()['state'] in ('queued', 'running') and r.json()['max_iters'] == 40
    seen = set()
    st = server.wait('tiny', until=lambda s: seen.add(s['state']) or s['state'] in ('done', 'failed', 'cancelled'))
    assert st['state'] == 'done', st
    assert st['step'] == 40 and st['val_loss'] < 4.5 and st['tokens_per_s'] > 0
    assert 'tiny' in c.get('/lm').json()
    m = c.get('/lm/tiny').json()
    assert m['config']['dataset'] == 'plays.txt'                     # the dataset named is the one trained on
    assert m['tokenizer']['vocab_size'] == info['vocab_size'] == m['config']['model']['vocab_size']
    assert [x['step'] for x in m['metrics']] == [0, 20, 40]

    r = c.get('/lm/tiny/eval', params={'tokens': 300, 'seed': 7, 'prompt': 'ROMEO:'})
    assert r.status_code == 200, r.text
    plain = r.json()['eval']
    assert isinstance(plain, str) and len(plain) == 300 and set(plain) <= set(text)
    assert c.get('/lm/tiny/eval', params={'tokens': 300, 'seed': 7, 'prompt': 'ROMEO:'}).json()['eval'] == plain
    lines = c.get('/lm/tiny/eval', params={'tokens': 300, 'seed': 7, 'prompt': 'ROMEO:', 'split_newlines': True}).json()['eval']
    assert lines == plain.split('\n')

    with c.stream('GET', '/lm/tiny/eval', params={'tokens': 300, 'seed': 7, 'prompt': 'ROMEO:', 'stream': True}) as r:
        assert r.status_code == 200 and r.headers['content-type'].startswith('text/event-stream')
        events = sse_events(r.iter_lines())
    pieces = [d['text'] for e, d in events if e == 'message']
    assert len(pieces) == 300 and ''.join(pieces) == plain             # streamed piece by piece, same text
    assert events[-1] == ('done', {'tokens': 300})

    assert c.delete('/lm/tiny').status_code == 200
    assert c.get('/lm/tiny').status_code == 404 and 'tiny' not in c.get('/lm').json()
    assert not (server.home/'models'/'tiny').exists()
    assert c.delete('/ds/plays.txt').status_code == 200
    assert 'plays.txt' not in c.get('/ds').json()

def test_seed_request_body_is_accepted_unchanged(server):
    "The original example request starts a real job (202); the lecture model is big, so cancel it."
    c = server.client
    r = c.post('/lm/shakespeare/train', json=SEED_BODY)
    assert r.status_code == 202, r.text
    assert r.json()['max_iters'] == 5000
    assert c.post('/lm/shakespeare/train', json=SEED_BODY).status_code == 409   # already training
    cfg = c.get('/lm/shakespeare').json()['config']
    assert cfg['model'] | {'vocab_size': 65} == {**cfg['model'], 'block_size': 256, 'n_head': 6, 'n_embed': 384,
                                                'n_layer': 6, 'dropout': 0.2}
    assert cfg['train']['learning_rate'] == 3e-4 and cfg['train']['batch_size'] == 64
    r = c.post('/lm/shakespeare/cancel')
    assert r.status_code == 200, r.text
    st = server.wait('shakespeare', ('cancelled',), timeout=120)
    assert st['step'] < 5000
    assert c.post('/lm/shakespeare/cancel').status_code == 409          # nothing to cancel now

def test_vocab_size_mismatch_is_not_an_error(server):
    r = server.client.post('/lm/v/train', json=train_body(vocab_size=1000, max_iters=5, eval_interval=5))
    assert r.status_code == 202, r.text
    assert server.wait('v')['state'] == 'done'
    assert server.client.get('/lm/v').json()['config']['model']['vocab_size'] == 65

BAD = [  # (method, path, request kwargs, status, words the message must contain)
    ('post', '/lm/m/train', {'json': train_body(n_embed=30, n_head=4)}, 422, 'divisible'),
    ('post', '/lm/m/train', {'json': {'hyperparameters': {'n_embed': 32, 'n_heads': 3}}}, 422, 'divisible'),
    ('post', '/lm/m/train', {'json': train_body(n_heads=2)}, 422, 'n_heads'),   # n_head and n_heads both given
    ('post', '/lm/m/train', {'json': train_body(dropout=1.0)}, 422, 'dropout'),
    ('post', '/lm/m/train', {'json': train_body(n_layer=0)}, 422, 'n_layer'),
    ('post', '/lm/m/train', {'json': train_body(block_size=-4)}, 422, 'block_size'),
    ('post', '/lm/m/train', {'json': train_body(learning_rate=0)}, 422, 'learning_rate'),
    ('post', '/lm/m/train', {'json': train_body(max_iters='lots')}, 422, 'max_iters'),
    ('post', '/lm/m/train', {'json': train_body(n_embd=32)}, 422, 'n_embd'),
    ('post', '/lm/m/train', {'json': {**train_body(), 'tokenizer': 'sentencepiece'}}, 422, 'tokenizer'),
    ('post', '/lm/m/train', {'json': train_body('no-such-data')}, 404, 'no-such-data'),
    ('post', '/lm/m/train', {'json': train_body(n_layer=48, n_embed=2048, block_size=2048, batch_size=1024)}, 422, 'GiB'),
    ('post', '/lm/m/train', {'content': b'{not json', 'headers': {'content-type': 'application/json'}}, 422, 'JSON'),
    ('post', '/lm/m/train', {'json': {**train_body(), 'resume': True}}, 404, "'m'"),
    ('post', '/lm/m/train', {'json': {**train_body(), 'processes': 0}}, 422, 'processes'),
    ('post', '/lm/m/train', {'json': {**train_body(), 'processes': 1000}}, 422, 'processes'),
    ('post', '/lm/.hidden/train', {'json': train_body()}, 422, 'invalid model name'),
    ('get', '/lm/nope', {}, 404, "'nope'"),
    ('get', '/lm/nope/status', {}, 404, "'nope'"),
    ('get', '/lm/nope/eval', {}, 404, "'nope'"),
    ('post', '/lm/nope/cancel', {}, 404, "'nope'"),
    ('delete', '/lm/nope', {}, 404, "'nope'"),
    ('get', '/lm/nope/eval', {'params': {'tokens': 10_001}}, 422, 'tokens'),
    ('get', '/lm/nope/eval', {'params': {'tokens': 0}}, 422, 'tokens'),
    ('get', '/lm/nope/eval', {'params': {'top_p': 0}}, 422, 'top_p'),
    ('get', '/lm/nope/eval', {'params': {'temperature': -1}}, 422, 'temperature'),
    ('get', '/lm/nope/eval', {'params': {'checkpoint': 'worst'}}, 422, 'checkpoint'),
    ('get', '/ds/nope.txt', {}, 404, "'nope.txt'"),
    ('delete', '/ds/nope.txt', {}, 404, "'nope.txt'"),
    ('get', '/ds/%2E%2E', {}, 422, 'invalid dataset name'),
    ('post', '/ds/upload', {'files': {'file': ('bin.txt', b'\xff\xfe\x00abc')}}, 422, 'UTF-8'),
    ('post', '/ds/upload', {'files': {'file': ('empty.txt', b'')}}, 422, 'empty'),
    ('post', '/ds/upload', {'files': {'file': ('x.txt', b'hello')}, 'data': {'name': '../x'}}, 422, 'invalid dataset name'),
    ('post', '/ds/upload', {'files': {'file': ('x.txt', b'hello')}, 'data': {'name': 'shakespeare'}}, 409, 'built-in'),
    ('post', '/ds/upload', {'data': {'name': 'x'}}, 422, 'file'),
]

@pytest.mark.parametrize('method,path,kw,status,words', BAD, ids=[f"{m} {p} {i}" for i, (m, p, *_) in enumerate(BAD)])
def test_bad_input_is_a_json_error(shared_server, method, path, kw, status, words):
    server = shared_server
    r = server.client.request(method, path, **kw)
    assert r.status_code == status, r.text
    detail = r.json()['detail']
    assert isinstance(detail, str) and words in detail
    assert not (server.home/'models'/'m').exists()                    # a refused request changes nothing

def test_upload_rules(home):
    s = Server(home, '--max-upload-mb', '0.01')
    try:
        c = s.client
        assert c.post('/ds/upload', files={'file': ('a.txt', b'first')}).status_code == 201
        r = c.post('/ds/upload', files={'file': ('a.txt', b'second')})
        assert r.status_code == 409 and 'overwrite' in r.json()['detail']
        assert c.post('/ds/upload', files={'file': ('a.txt', b'second')}, data={'overwrite': 'true'}).status_code == 201
        assert (home/'data'/'a.txt').read_text() == 'second'
        r = c.post('/ds/upload', files={'file': ('big.txt', b'x' * 20_000)})
        assert r.status_code == 413 and '10,000-byte limit' in r.json()['detail']
        r = c.post('/ds/upload', files={'file': ('huge.txt', b'x' * 3_000_000)})
        assert r.status_code == 413
        assert sorted(p.name for p in (home/'data').iterdir()) == ['a.txt', 'tinyshakespeare.txt']  # no partial files
    finally: s.stop()

def test_api_key_guards_every_change(home):
    s = Server(home, env={'CHADGPT_API_KEY': 's3cret'})
    try:
        c = s.client
        assert c.get('/ds').status_code == 200 and c.get('/lm').status_code == 200   # reading needs no key
        for method, path, kw in [('post', '/ds/upload', {'files': {'file': ('a.txt', b'hi')}}), ('delete', '/ds/a.txt', {}),
                                 ('post', '/lm/k/train', {'json': train_body(max_iters=5)}), ('post', '/lm/k/cancel', {}),
                                 ('delete', '/lm/k', {})]:
            for headers in ({}, {'X-API-Key': 'wrong'}):
                r = c.request(method, path, headers=headers, **kw)
                assert r.status_code == 401 and 'API key' in r.json()['detail'], (method, path, r.text)
        assert c.post('/ds/upload', files={'file': ('a.txt', b'hi there')}, headers={'X-API-Key': 's3cret'}).status_code == 201
        r = c.post('/lm/k/train', json=train_body(max_iters=5, eval_interval=5), headers={'Authorization': 'Bearer s3cret'})
        assert r.status_code == 202, r.text
    finally: s.stop()

def test_cors_is_off_by_default_and_configurable(home):
    s = Server(home, '--cors-origin', 'http://allowed.example')
    try:
        pre = lambda origin: s.client.options('/ds', headers={'Origin': origin, 'Access-Control-Request-Method': 'GET'})
        assert pre('http://allowed.example').headers.get('access-control-allow-origin') == 'http://allowed.example'
        assert 'access-control-allow-origin' not in pre('http://evil.example').headers
    finally: s.stop()

def test_api_answers_while_training(home):
    "20 concurrent generations (the limit raised to 20) and status polls all succeed while a training job runs."
    server = Server(home, '--max-generations', 20)
    try: _answers_while_training(server)
    finally: server.stop()

def _answers_while_training(server):
    c = server.client
    assert c.post('/lm/small/train', json=train_body(max_iters=20, eval_interval=20)).status_code == 202
    assert server.wait('small')['state'] == 'done'
    r = c.post('/lm/busy/train', json=train_body(n_layer=2, n_embed=64, block_size=64, max_iters=100_000, eval_interval=50))
    assert r.status_code == 202, r.text
    server.wait('busy', until=lambda s: s['state'] == 'running' and s['step'] > 0)
    def gen(i):
        r = httpx.get(f'{server.url}/lm/small/eval', params={'tokens': 200, 'seed': i}, timeout=120)
        return r.status_code, len(r.json().get('eval', ''))
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(gen, i) for i in range(20)]
        statuses = [c.get('/lm/busy/status') for _ in range(5)]
        results = [f.result() for f in futures]
    assert results == [(200, 200)] * 20
    assert all(r.status_code == 200 and r.json()['state'] == 'running' for r in statuses)
    assert c.get('/lm').json() == ['busy', 'small']
    st = c.post('/lm/busy/cancel').json()
    assert st['state'] == 'cancelled' and st['resumable'], st
    assert c.delete('/lm/busy').status_code == 200

def job_pid(home, name) -> int: return json.loads((home/'jobs'/name/'job.json').read_text())['pid']

def test_jobs_outlive_the_server_and_a_killed_job_resumes(home):
    """A job trains in its own process: it outlives a SIGKILLed server, and the next server follows it and cancels it.
    A job SIGKILLed itself shows as failed and resumable, and the server keeps serving."""
    key = {'CHADGPT_API_KEY': 'k'}
    s = Server(home, env=key, key='k')
    c = s.client
    assert c.post('/lm/done/train', json=train_body(max_iters=10, eval_interval=10)).status_code == 202
    assert s.wait('done')['state'] == 'done'
    assert c.post('/lm/job/train', json=train_body(max_iters=100_000, eval_interval=20)).status_code == 202
    s.wait('job', until=lambda st: st['val_loss'] is not None and st['step'] >= 45)
    pid = job_pid(home, 'job')
    assert b'CHADGPT_API_KEY' not in Path(f'/proc/{pid}/environ').read_bytes()   # the child never sees the key
    s.stop(signal.SIGKILL)                                               # the server dies; its job trains on
    assert psutil.pid_exists(pid)
    s = Server(home, env=key, key='k')
    try:
        c = s.client
        assert c.get('/lm').json() == ['done', 'job']
        assert c.get('/lm/done/status').json()['state'] == 'done'
        st = s.wait('job', until=lambda st: st['state'] == 'running' and st['step'] >= 60)   # found again, followed
        assert c.post('/lm/job/cancel').status_code == 200
        st = s.wait('job', ('cancelled', 'failed'))
        assert st['state'] == 'cancelled' and st['resumable'], st
        cancelled_at = st['step']
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

        r = c.post('/lm/job/train', json={'resume': True, 'hyperparameters': {'max_iters': 100_000}})
        assert r.status_code == 202, r.text
        s.wait('job', until=lambda st: st['state'] == 'running' and st['step'] >= cancelled_at + 25)   # past a checkpoint
        os.kill(job_pid(home, 'job'), signal.SIGKILL)                    # the out-of-memory killer, say
        st = s.wait('job', ('done', 'failed', 'cancelled'))
        assert st['state'] == 'failed' and st['resumable'] and 'SIGKILL' in st['error'], st
        assert c.get('/lm/done/eval', params={'tokens': 20}).status_code == 200   # the server serves on
        assert c.get('/lm/job/eval', params={'tokens': 20}).status_code == 200    # the last checkpoint is usable
        ckpt_step = st['step']
        assert ckpt_step % 20 == 0
        r = c.post('/lm/job/train', json={'resume': True, 'hyperparameters': {'max_iters': ckpt_step + 20}})
        assert r.status_code == 202, r.text
        st = s.wait('job')
        assert st['state'] == 'done' and st['step'] == ckpt_step + 20, st
        assert [m['step'] for m in c.get('/lm/job').json()['metrics']][-2:] == [ckpt_step, ckpt_step + 20]
    finally: s.stop()

def test_a_job_in_two_processes(server):
    "processes: 2 trains data-parallel under torchrun; more processes than the server's cores is refused."
    c = server.client
    r = c.post('/lm/two/train', json={**train_body(max_iters=10, eval_interval=10, keep_best=True), 'processes': 2})
    assert r.status_code == 202, r.text
    with c.stream('GET', '/lm/two/progress') as s:                   # live, read from the job's folder
        events = sse_events(s.iter_lines())
    assert [(e, d['step']) for e, d in events if e == 'eval'] == [('eval', 0), ('eval', 10)], events
    assert events[-1][0] == 'end' and events[-1][1]['state'] == 'done', events[-1]
    st = server.wait('two')
    assert st['state'] == 'done' and st['processes'] == 2, st
    assert c.get('/lm/nope/progress').status_code == 404
    assert c.get('/lm/two/eval', params={'tokens': 5, 'checkpoint': 'best'}).status_code == 200   # kept with keep_best
    assert json.loads((server.home/'models'/'two'/'state.json').read_text())['processes'] == 2

def test_sigterm_stops_jobs_with_a_checkpoint(home):
    s = Server(home)
    assert s.client.post('/lm/j/train', json=train_body(max_iters=100_000, eval_interval=1000)).status_code == 202
    s.wait('j', until=lambda st: st['step'] >= 20)
    s.stop(signal.SIGTERM)
    assert s.proc.returncode in (0, -signal.SIGTERM), s.output()   # uvicorn re-raises the signal after a clean shutdown
    assert "Application shutdown complete" in s.output()
    st = json.loads((home/'models'/'j'/'state.json').read_text())
    assert st['status'] == 'cancelled' and st['step'] >= 20
    s = Server(home)
    try:
        st = s.client.get('/lm/j/status').json()
        assert st['state'] == 'cancelled' and st['resumable'] and st['error'] is None, st
    finally: s.stop()

def test_concurrent_generations_share_steps_and_each_text_is_its_own(server):
    "Eight generations at once (JSON, Server-Sent Events, OpenAI; one ended by a stop string, one by a client that "
    "leaves) all answer 200, and each gives the text it gives alone: the shared steps change no stream's tokens."
    c = server.client
    assert c.post('/lm/tiny/train', json=train_body(max_iters=30, eval_interval=30)).status_code == 202
    assert server.wait('tiny')['state'] == 'done'
    def eval_json(i):
        r = c.get('/lm/tiny/eval', params={'tokens': 120, 'seed': i, 'prompt': 'ROMEO'[:i]})
        assert r.status_code == 200, r.text
        return r.json()['eval']
    def eval_sse(i):
        with httpx.stream('GET', f'{server.url}/lm/tiny/eval', params={'tokens': 120, 'seed': i, 'stream': True}, timeout=60) as r:
            return ''.join(d['text'] for e, d in sse_events(r.iter_lines()) if e == 'message')
    def openai(i):
        r = c.post('/v1/completions', json={'model': 'tiny', 'prompt': 'KING', 'max_tokens': 100, 'seed': i, 'temperature': 0.9})
        return r.json()['choices'][0]['text']
    def stopped(i): return c.get('/lm/tiny/eval', params={'tokens': 200, 'seed': i, 'stop': 'e'}).json()['eval']
    def leaves(i):                                         # reads two events of a long stream, then hangs up
        with httpx.stream('GET', f'{server.url}/lm/tiny/eval', params={'tokens': 5000, 'seed': i, 'stream': True}, timeout=60) as r:
            lines = r.iter_lines()
            return [next(lines) for _ in range(2)][0][:6]
    calls = [(eval_json, 1), (eval_json, 2), (eval_sse, 3), (eval_sse, 4), (openai, 5), (openai, 6), (stopped, 7), (leaves, 8)]
    alone = [f(i) for f, i in calls]
    with ThreadPoolExecutor(8) as pool: together = list(pool.map(lambda fi: fi[0](fi[1]), calls))
    assert together == alone
    assert len(alone[0]) == 120 and 'e' not in alone[6] and alone[7] == 'data: '
    assert eval_json(1) == alone[0]                           # and the server is still fine

def test_serve_compile_gives_the_eager_texts(server, home):
    "`chadgpt serve --compile`: the compiled steps (a stream alone, streams sharing steps, learned positions past the "
    "window) give the texts the eager server gives, and the log says nothing of falling back to eager."
    c = server.client
    assert c.post('/lm/tiny/train', json=train_body(max_iters=30, eval_interval=30)).status_code == 202
    assert server.wait('tiny')['state'] == 'done'
    ask = lambda client, i: client.get('/lm/tiny/eval', params={'tokens': 60, 'seed': i, 'prompt': 'KING'[:i]}).json()['eval']
    eager = [ask(c, i) for i in range(3)]                   # 60 tokens: past the 32-token window
    fast = Server(home, '--compile')
    try:
        assert [ask(fast.client, i) for i in range(3)] == eager
        with ThreadPoolExecutor(3) as pool: assert list(pool.map(lambda i: ask(fast.client, i), range(3))) == eager
        assert 'eagerly' not in fast.output()
    finally: fast.stop()
