"""The service under attack: a real `chadgpt serve` on 127.0.0.1, sent what a hostile client or a hostile web page
would send (issue 9): paths for dataset names, cross-site requests, rebound host names, oversized and chunked
uploads without a key, more memory and compute than the machine has, and errors fished for server paths."""
import select, socket, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import httpx, pytest
from conftest import Server, TINY as CLI_TINY, chadgpt

TINY = {'block_size': 32, 'n_head': 2, 'n_embed': 32, 'n_layer': 1, 'batch_size': 8, 'eval_iters': 2}

def body(dataset='shakespeare', **hp):
    return {'dataset': dataset, 'tokenizer': 'character', 'hyperparameters': {**TINY, **hp}}

def assert_no_server_path(text:str, *paths):
    for p in paths: assert str(p) not in text, f"{p} leaked in {text!r}"

@pytest.fixture
def tiny_model(home):
    "A trained model named 'tiny' in `home` (made with the CLI, as its owner would)."
    r = chadgpt('train', '--name', 'tiny', '--max-iters', 5, '--eval-interval', 5, *CLI_TINY, home=home)
    assert r.returncode == 0, r.stderr
    return 'tiny'

# ---- 1. a dataset over HTTP is a name, never a path -------------------------------------------------------

def test_datasets_are_names_never_paths(home, tmp_path):
    cwd = tmp_path/'cwd'; cwd.mkdir()
    (cwd/'secret.txt').write_text('TOP SECRET\n' * 200)                 # in the server's working directory
    s = Server(home, cwd=cwd)
    try:
        c = s.client
        for ds in ('/etc/passwd', '../../etc/passwd', '~/.bashrc', '/proc/self/environ', '/proc/self/mem',
                   'data/tinyshakespeare.txt', './secret.txt', '..', str(cwd/'secret.txt')):
            r = c.post('/lm/m/train', json=body(ds))
            assert r.status_code == 422 and r.json()['detail'].startswith('dataset: '), (ds, r.text)
            if str(home) not in ds: assert_no_server_path(r.text, home)
        r = c.post('/lm/m/train', json=body('secret.txt'))                   # a name, but not an uploaded dataset
        assert r.status_code == 404 and "unknown dataset 'secret.txt'" in r.json()['detail'], r.text
        assert_no_server_path(r.text, home, cwd)
        assert c.get('/lm').json() == [] and not (home/'models').exists()
        for path in ('/ds/%2Fetc%2Fpasswd', '/ds/..%2F..%2Fetc%2Fpasswd', '/ds/~', '/static/../api.py',
                     '/static/%2e%2e/api.py', '/static/..%2Fapi.py'):
            r = c.get(path)
            assert r.status_code in (404, 422) and 'root:' not in r.text and 'import' not in r.text, (path, r.text)
    finally: s.stop()

def test_a_model_trained_on_a_local_path_does_not_expose_it(home, tmp_path):
    private = tmp_path/'private'; private.mkdir()
    (private/'diary.txt').write_text('Dear diary, today I trained a GPT.\n' * 100)
    r = chadgpt('train', '--name', 'diary', '--dataset', private/'diary.txt', '--max-iters', 4, '--eval-interval', 4,
                *CLI_TINY, home=home)
    assert r.returncode == 0, r.stderr
    s = Server(home)
    try:
        c = s.client
        r = c.get('/lm/diary')
        assert r.status_code == 200 and r.json()['config']['dataset'] == 'diary.txt'
        assert_no_server_path(r.text, private)
        r = c.post('/lm/diary/train', json={'resume': True, 'hyperparameters': {'max_iters': 8}})
        assert r.status_code == 422 and 'outside the data folder' in r.json()['detail'], r.text
        assert_no_server_path(r.text, private)
        assert c.get('/lm/diary/eval', params={'tokens': 20}).status_code == 200   # the owner's model still answers
    finally: s.stop()

# ---- 2. cross-site requests and DNS rebinding -------------------------------------------------------------

EVIL = 'http://evil.example'

def test_cross_site_changes_are_refused(home):
    s = Server(home)                                                        # the default: no key
    try:
        c = s.client
        assert c.post('/ds/upload', files={'file': ('notes.txt', b'my notes\n' * 20)}).status_code == 201
        assert c.post('/lm/job/train', json=body(max_iters=100_000, eval_interval=1000)).status_code == 202
        cross = [{'Origin': EVIL}, {'Origin': 'null'}, {'Origin': 'http://localhost:3000'},   # another port is same-site
                 {'Sec-Fetch-Site': 'cross-site'}, {'Sec-Fetch-Site': 'same-site'}]
        for h in cross:
            r = c.post('/ds/upload', files={'file': ('notes.txt', b'pwned')}, data={'overwrite': 'true'}, headers=h)
            assert r.status_code == 403 and 'cross-site' in r.json()['detail'], (h, r.text)
            assert c.post('/lm/job/cancel', headers=h).status_code == 403, h               # a body-less POST
            assert c.delete('/ds/notes.txt', headers=h).status_code == 403, h
            assert c.delete('/lm/job', headers=h).status_code == 403, h
            r = c.post('/lm/job2/train', content=b'{"dataset": "notes.txt"}', headers={**h, 'Content-Type': 'text/plain'})
            assert r.status_code == 403, h
        assert (home/'data'/'notes.txt').read_text() == 'my notes\n' * 20
        assert c.get('/lm/job/status').json()['state'] in ('queued', 'running')
        # another site's page may not make the browser generate (an <img> or no-cors fetch)
        r = c.get('/lm/job/eval', headers={'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Mode': 'no-cors'})
        assert r.status_code == 403
        # following a link from another site to the web page is fine
        r = c.get('/', headers={'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Mode': 'navigate'})
        assert r.status_code == 200 and r.headers['x-frame-options'] == 'DENY'
        # the page itself (same origin), and clients without browser headers, keep working
        same = {'Origin': s.url, 'Sec-Fetch-Site': 'same-origin'}
        r = c.post('/lm/job/cancel', headers=same)
        assert r.status_code == 200 and r.json()['state'] == 'cancelled', r.text
        assert c.delete('/lm/job', headers=same).status_code == 200
        assert c.delete('/ds/notes.txt').status_code == 200
    finally: s.stop()

def test_host_header_is_checked(home):
    s = Server(home, '--allowed-host', 'chad.example.com', '--cors-origin', 'https://app.example.com')
    try:
        c, port = s.client, s.port
        for host in ('evil.example', f'evil.example:{port}', f'rebind.127.0.0.1.nip.io:{port}', '10.0.0.1',
                     f'localhost.evil.example:{port}', f'localhost:{port}:1'):
            r = c.get('/lm', headers={'Host': host})
            assert r.status_code == 400 and 'host' in r.json()['detail'], (host, r.text)
            assert c.post('/lm/x/cancel', headers={'Host': host}).status_code == 400, host
        for host in (f'localhost:{port}', f'127.0.0.1:{port}', f'[::1]:{port}', 'LOCALHOST.', 'chad.example.com'):
            assert c.get('/lm', headers={'Host': host}).status_code == 200, host
        # an allowed origin may change things (here: a 404 for a model that does not exist), and reads the answer
        r = c.post('/lm/x/cancel', headers={'Origin': 'https://app.example.com'})
        assert r.status_code == 404 and r.headers['access-control-allow-origin'] == 'https://app.example.com'
    finally: s.stop()

# ---- 3. uploads: the key first, bytes counted as they arrive -------------------------------------------------

def raw_upload(port:int, headers:dict, chunks=(), chunked:bool=True, wait:float=2.0):
    """POST /ds/upload over a raw socket: send the headers, then `chunks` (chunk-encoded if `chunked`) until the
    server answers or hangs up. Returns `(status or None, bytes of body sent)`."""
    head = ''.join(f'{k}: {v}\r\n' for k, v in {'Host': f'127.0.0.1:{port}', **headers}.items())
    s = socket.create_connection(('127.0.0.1', port), timeout=5)
    sent = 0
    try:
        s.sendall(f'POST /ds/upload HTTP/1.1\r\n{head}\r\n'.encode())
        if not select.select([s], [], [], wait)[0]:                        # no answer from the headers alone
            for c in chunks:
                if select.select([s], [], [], 0)[0]: break                # answered before the body was all sent
                s.sendall(b'%x\r\n%s\r\n' % (len(c), c) if chunked else c)
                sent += len(c)
            else:
                if chunked: s.sendall(b'0\r\n\r\n')
        resp = s.recv(65536)
    except (BrokenPipeError, ConnectionResetError, TimeoutError): resp = b''
    finally: s.close()
    return (int(resp.split(b' ', 2)[1]) if resp.startswith(b'HTTP/1.1 ') else None), sent

MB = 2**20
BOUNDARY = 'chadgptboundary'
FORM = {'Content-Type': f'multipart/form-data; boundary={BOUNDARY}'}

def multipart_chunks(name:str, total:int, chunk:int=64 * 1024):
    "A multipart body holding a file `name` of `total` bytes, as a generator of chunks (never all in memory)."
    yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n' \
          f'Content-Type: text/plain\r\n\r\n'.encode()
    for _ in range(total // chunk): yield b'x' * chunk
    yield f'\r\n--{BOUNDARY}--\r\n'.encode()

def test_uploads_check_the_key_first_and_count_bytes(home, tmp_path):
    spool = tmp_path/'spool'; spool.mkdir()                                 # where the server's temporary files go
    s = Server(home, '--api-key', 'secret', '--max-upload-mb', 1, env={'TMPDIR': str(spool)})
    try:
        port = s.port
        # no key: refused from the headers, before a byte of a 1000 MiB body (chunked, or announced)
        status, sent = raw_upload(port, {**FORM, 'Transfer-Encoding': 'chunked'}, multipart_chunks('big.txt', 1000 * MB))
        assert (status, sent) == (401, 0)
        status, sent = raw_upload(port, {**FORM, 'Content-Length': str(1000 * MB)}, chunked=False)
        assert (status, sent) == (401, 0)
        # with the key: an announced size over the limit is refused before the body...
        key = {'X-API-Key': 'secret'}
        status, sent = raw_upload(port, {**FORM, **key, 'Content-Length': str(1000 * MB)}, chunked=False)
        assert (status, sent) == (413, 0)
        # ...and a chunked body (no size announced) is cut off as soon as it passes the limit
        status, sent = raw_upload(port, {**FORM, **key, 'Transfer-Encoding': 'chunked'}, multipart_chunks('big.txt', 1000 * MB))
        assert status in (413, None) and sent < 16 * MB, (status, sent)
        # a chunked upload under the limit is fine
        status, sent = raw_upload(port, {**FORM, **key, 'Transfer-Encoding': 'chunked'}, multipart_chunks('ok.txt', 512 * 1024))
        assert status == 201
        time.sleep(0.5)
        assert sorted(p.name for p in (home/'data').iterdir()) == ['ok.txt', 'tinyshakespeare.txt']
        assert list(spool.iterdir()) == [], list(spool.iterdir())           # nothing spooled and left behind
        r = s.client.post('/ds/upload', files={'file': ('b.txt', b'x' * 1_100_000)}, headers=key)
        assert r.status_code == 413 and '1,000,000-byte limit' in r.json()['detail'], r.text
        r = s.client.post('/lm/x/train', content=b'{"dataset": "' + b'x' * 100_000 + b'"}',
                          headers={**key, 'Content-Type': 'application/json'})
        assert r.status_code == 413                                         # JSON bodies are capped too
        assert s.client.get('/ds').status_code == 200 and s.proc.poll() is None
    finally: s.stop()

# ---- 4. memory: one cap for the jobs that run together -----------------------------------------------------

def test_memory_cap_applies_to_jobs_together(home):
    s = Server(home, '--max-job-gb', 0.4, '--workers', 2)
    try:
        c = s.client
        r = c.post('/lm/big/train', json=body(n_layer=8, n_embed=512, n_head=8))
        assert r.status_code == 422 and 'more than this server allows (0.4 GiB)' in r.json()['detail'], r.text
        assert c.post('/lm/a/train', json=body(max_iters=100_000, eval_interval=1000)).status_code == 202
        r = c.post('/lm/b/train', json=body(max_iters=100_000, eval_interval=1000))    # would run beside a
        assert r.status_code == 429 and int(r.headers['retry-after']) > 0 and 'beside it' in r.json()['detail'], r.text
        assert c.post('/lm/a/cancel').status_code == 200
        assert c.post('/lm/b/train', json=body(max_iters=100_000, eval_interval=1000)).status_code == 202
        assert c.post('/lm/b/cancel').status_code == 200
    finally: s.stop()
    s = Server(home, '--max-job-gb', 0.4)                                   # one worker: jobs run one at a time
    try:
        c = s.client
        assert c.post('/lm/a/train', json=body(max_iters=100_000, eval_interval=1000)).status_code == 202
        r = c.post('/lm/b/train', json=body(max_iters=100_000, eval_interval=1000))
        assert r.status_code == 202 and r.json()['state'] == 'queued', r.text
        for n in ('b', 'a'): assert c.post(f'/lm/{n}/cancel').status_code == 200
    finally: s.stop()

# ---- 5. compute: a bounded number of generations, and reads behind the key when asked ----------------------

def test_generations_are_limited(home, tiny_model):
    # a 256-character window makes each of 10,000 characters cost a full forward pass: streams that last
    r = chadgpt('train', '--name', 'wide', '--block-size', 256, '--n-layer', 2, '--n-embed', 64, '--n-head', 2,
                '--batch-size', 4, '--max-iters', 2, '--eval-interval', 2, '--eval-iters', 1, '--quiet', home=home)
    assert r.returncode == 0, r.stderr
    s = Server(home, '--max-generations', 2)
    try:
        c = s.client
        params = {'tokens': 10_000, 'stream': True}
        with c.stream('GET', '/lm/wide/eval', params=params) as s1, c.stream('GET', '/lm/wide/eval', params=params) as s2:
            lines = s1.iter_lines(), s2.iter_lines()     # kept: dropping an iterator closes its connection
            assert all(next(l).startswith('data:') for l in lines)
            r = c.get('/lm/tiny/eval', params={'tokens': 5})
            assert r.status_code == 429 and r.headers['retry-after'] == '1' and '2 generations' in r.json()['detail']
        deadline = time.monotonic() + 30                                     # closed streams give their slots back
        while (r := c.get('/lm/tiny/eval', params={'tokens': 5})).status_code == 429:
            assert time.monotonic() < deadline, "slots were not given back after the streams closed"
            time.sleep(0.2)
        assert r.status_code == 200
        with ThreadPoolExecutor(8) as pool:                                  # a burst: some served, the rest told to retry
            codes = list(pool.map(lambda i: httpx.get(f'{s.url}/lm/tiny/eval', params={'tokens': 300}, timeout=120).status_code, range(8)))
        assert set(codes) <= {200, 429} and 200 in codes, codes
    finally: s.stop()

def test_key_for_reads(home, tiny_model):
    s = Server(home, '--api-key', 'k3y', '--key-for-reads')
    try:
        c = s.client
        for path in ('/ds', '/ds/shakespeare', '/lm', '/lm/tiny', '/lm/tiny/status', '/lm/tiny/eval?tokens=5'):
            r = c.get(path)
            assert r.status_code == 401 and 'API key' in r.json()['detail'], (path, r.text)
            assert c.get(path, headers={'X-API-Key': 'k3y'}).status_code == 200, path
        for path in ('/', '/static/app.js', '/openapi.json', '/docs'):        # the page loads, then asks for the key
            assert c.get(path).status_code == 200, path
    finally: s.stop()

# ---- 6. the smaller things -------------------------------------------------------------------------------

def test_builtins_strict_integers_and_damaged_models(home, tiny_model):
    s = Server(home)
    try:
        c = s.client
        for name in ('tinyshakespeare.txt', 'shakespeare'):
            r = c.delete(f'/ds/{name}')
            assert r.status_code == 409 and 'built-in' in r.json()['detail']
        assert (home/'data'/'tinyshakespeare.txt').stat().st_size == 1_115_394
        for v in ('2', True, 2.0, 1e3, '1_0'):
            r = c.post('/lm/m/train', json=body(max_iters=v))
            assert r.status_code == 422 and 'max_iters' in r.json()['detail'], (v, r.text)
        for v in ('2.0', '2_0', ' 2', '1e3', 'true'):
            r = c.get('/lm/tiny/eval', params={'tokens': v})
            assert r.status_code == 422 and 'tokens' in r.json()['detail'], (v, r.text)
        assert c.post('/lm/m/train', json={**body(), 'resume': 'true'}).status_code == 422
        assert c.post('/lm/m/train', json=body(learning_rate=1)).status_code == 202    # a float may be written as 1
        s.wait('m')
        r = c.post('/lm/ghost/train', json={'resume': True})
        assert r.status_code == 404 and "'ghost'" in r.json()['detail']
        assert_no_server_path(r.text, home)
        (home/'models'/'tiny'/'model.safetensors').write_bytes(b'not a safetensors file')
        r = c.get('/lm/tiny/eval', params={'tokens': 5})
        assert r.status_code == 409 and "'tiny' could not be loaded" in r.json()['detail'], r.text
        assert_no_server_path(r.text, home)
    finally: s.stop()

def test_retrain_delete_eval_race(home):
    "Retrain, delete and generate from one model at once: only 2xx/404/409 answers, never a path or the wrong folder."
    s = Server(home)
    try:
        c = s.client
        assert c.post('/lm/r/train', json=body(max_iters=5, eval_interval=5)).status_code == 202
        s.wait('r')
        answers, stop = [], threading.Event()
        def hammer(call):
            with httpx.Client(base_url=s.url, timeout=60) as h:
                for _ in range(200):
                    if stop.is_set(): break
                    r = call(h)
                    answers.append((r.status_code, r.text))
        calls = [lambda h: h.post('/lm/r/train', json=body(max_iters=5, eval_interval=5)), lambda h: h.delete('/lm/r'),
                 lambda h: h.get('/lm/r/eval', params={'tokens': 5}), lambda h: h.get('/lm/r')]
        threads = [threading.Thread(target=hammer, args=(f,)) for f in calls]
        for t in threads: t.start()
        time.sleep(6); stop.set()
        for t in threads: t.join(60)
        codes = {code for code, _ in answers}
        assert codes <= {200, 202, 404, 409, 429}, codes
        assert len(answers) > 20
        for _, text in answers: assert_no_server_path(text, home); assert 'models in models' not in text
    finally: s.stop()
