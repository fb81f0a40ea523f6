"""Shared fixtures: a fresh chadgpt home with Tiny Shakespeare copied in (tests never download)."""
import hashlib, multiprocessing as mp, os, signal, socket, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import httpx, pytest
import forked_cli
from multiprocessing import forkserver

REPO = Path(__file__).resolve().parents[1]
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
CANDIDATES = [REPO/'data'/'tinyshakespeare.txt', REPO.parent/'shared'/'data'/'tinyshakespeare.txt']

@pytest.fixture(scope='session')
def shakespeare() -> Path:
    "Path of a verified local copy of Tiny Shakespeare."
    for p in CANDIDATES:
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == SHA256: return p
    pytest.fail(f"Tiny Shakespeare not found at any of {[str(p) for p in CANDIDATES]}; tests do not download it")

R50K_SHA256 = '306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930'
R50K_CACHE_NAME = '0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4'   # sha1 of the URL tiktoken downloads it from
R50K_CANDIDATES = [REPO/'data'/'r50k_base.tiktoken', REPO.parent/'shared'/'data'/'r50k_base.tiktoken']

@pytest.fixture(scope='session', autouse=True)
def tiktoken_cache(tmp_path_factory) -> Path:
    "GPT-2's BPE ranks where tiktoken looks offline ($TIKTOKEN_CACHE_DIR, inherited by servers): tests never download."
    d = tmp_path_factory.mktemp('tiktoken-cache')
    for p in R50K_CANDIDATES:
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == R50K_SHA256:
            shutil.copy(p, d/R50K_CACHE_NAME); break
    else: pytest.fail(f"r50k_base.tiktoken not found at any of {[str(p) for p in R50K_CANDIDATES]}")
    os.environ['TIKTOKEN_CACHE_DIR'] = str(d)
    return d

@pytest.fixture
def home(tmp_path, shakespeare) -> Path:
    "A chadgpt home directory with data/tinyshakespeare.txt in place."
    (tmp_path/'data').mkdir()
    shutil.copy(shakespeare, tmp_path/'data'/'tinyshakespeare.txt')
    return tmp_path

# a model small enough to train in a couple of seconds on a 2-core CPU
TINY = ['--n-layer', '1', '--n-embed', '32', '--n-head', '2', '--block-size', '32', '--batch-size', '8',
        '--eval-iters', '2', '--quiet']

_FORKS = None

def _forks():
    "A fork server that has imported chadgpt (torch, ...) once: each command starts in milliseconds instead of 1.4 s."
    global _FORKS
    if _FORKS is None:
        _FORKS = mp.get_context('forkserver')
        _FORKS.set_forkserver_preload(['forked_cli'])   # (not this module: its imports would cost each child 0.2 s)
        old = os.environ.get('PYTHONPATH')              # where the fork server finds forked_cli (each child's own
        os.environ['PYTHONPATH'] = os.pathsep.join([str(Path(__file__).parent), *([old] if old else [])])   # environment
        try: forkserver.ensure_running()                # is set by forked_cli.run)
        finally:
            if old is None: del os.environ['PYTHONPATH']
            else: os.environ['PYTHONPATH'] = old
    return _FORKS

def chadgpt(*args, home=None, timeout=300, env=None, input=None, cwd=None, real=False) -> subprocess.CompletedProcess:
    """Run the `chadgpt` command (with `env` added to the environment) and return how it ended, as `subprocess.run` does.
    It runs as a child of a fork server that has already imported the package, which saves the 1.4 s of importing
    torch; with `real=True` (or CHADGPT_TEST_REAL=1 in the environment) it runs the installed console script instead."""
    env = {**os.environ, **(env or {}), 'PYTHONUNBUFFERED': '1'}
    if home is not None: env['CHADGPT_HOME'] = str(home)
    args = [str(a) for a in args]
    exe = shutil.which('chadgpt')
    assert exe, "the chadgpt console script is not installed (pip install -e .)"
    if real or os.environ.get('CHADGPT_TEST_REAL'):
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=timeout, input=input, cwd=cwd)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); (d/'in').write_text(input or '', encoding='utf-8'); (d/'out').touch(); (d/'err').touch()
        p = Forked(args, env, cwd, d/'in', d/'out', d/'err')
        try: p.wait(timeout)
        except subprocess.TimeoutExpired: p.kill(); p.wait(); raise
        read = lambda f: open(d/f, encoding='utf-8', newline=None).read()   # universal newlines, as text=True reads
        return subprocess.CompletedProcess([exe, *args], p.returncode, read('out'), read('err'))

class Forked:
    "A `chadgpt` command started by the fork server, with the parts of `subprocess.Popen`'s interface the tests use."
    def __init__(self, args, env, cwd, stdin, out, err):
        self.args, self.p = args, _forks().Process(target=forked_cli.run, args=(args, env, cwd, stdin, out, err))
        self.p.start()
        self.pid = self.p.pid
    @property
    def returncode(self): return self.p.exitcode
    def poll(self): return self.p.exitcode
    def send_signal(self, sig):
        if self.p.exitcode is None: os.kill(self.pid, sig)
    def kill(self): self.send_signal(signal.SIGKILL)
    def wait(self, timeout=None):
        self.p.join(timeout)
        if self.p.exitcode is None: raise subprocess.TimeoutExpired(self.args, timeout)
        return self.p.exitcode

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

class Server:
    "A `chadgpt serve` process over `home` (started as `chadgpt` says), with an httpx client pointed at it."
    def __init__(self, home:Path, *args, env=None, cwd=None, key=None, real=False):
        self.home, self.port = home, free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.log = open(home/f'server-{self.port}.log', 'w+')
        argv = ['serve', '--port', str(self.port), '--home', str(home), *map(str, args)]
        env = {**os.environ, **(env or {})}
        if real or os.environ.get('CHADGPT_TEST_REAL'):
            exe = shutil.which('chadgpt')
            assert exe, "the chadgpt console script is not installed (pip install -e .)"
            self.proc = subprocess.Popen([exe, *argv], stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        else: self.proc = Forked(argv, env, cwd, os.devnull, self.log.name, self.log.name)
        self.client = httpx.Client(base_url=self.url, timeout=60, headers={'X-API-Key': key} if key else None)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None: pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.client.get('/openapi.json').status_code == 200: break
            except httpx.TransportError: pass
            if time.monotonic() > deadline: pytest.fail(f"server did not start in 60 s:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        self.log.flush(); self.log.seek(0)
        return self.log.read()

    def wait(self, name, states=('done', 'failed', 'cancelled'), timeout=240, until=None) -> dict:
        "Poll `GET /lm/{name}/status` until the state is one of `states` (or `until(status)` holds)."
        deadline = time.monotonic() + timeout
        while True:
            st = self.client.get(f'/lm/{name}/status').json()
            if (until(st) if until else st['state'] in states): return st
            assert time.monotonic() < deadline, f"timed out waiting for {name}: {st}"
            time.sleep(0.2)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try: self.proc.wait(30)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        self.client.close()
