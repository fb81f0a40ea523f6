"""Shared fixtures: a fresh chadgpt home with Tiny Shakespeare copied in (tests never download)."""
import hashlib, os, shutil, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
CANDIDATES = [REPO/'data'/'tinyshakespeare.txt', REPO.parent/'shared'/'data'/'tinyshakespeare.txt']

@pytest.fixture(scope='session')
def shakespeare() -> Path:
    "Path of a verified local copy of Tiny Shakespeare."
    for p in CANDIDATES:
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == SHA256: return p
    pytest.fail(f"Tiny Shakespeare not found at any of {[str(p) for p in CANDIDATES]}; tests do not download it")

@pytest.fixture
def home(tmp_path, shakespeare) -> Path:
    "A chadgpt home directory with data/tinyshakespeare.txt in place."
    (tmp_path/'data').mkdir()
    shutil.copy(shakespeare, tmp_path/'data'/'tinyshakespeare.txt')
    return tmp_path

# a model small enough to train in a couple of seconds on a 2-core CPU
TINY = ['--n-layer', '1', '--n-embed', '32', '--n-head', '2', '--block-size', '32', '--batch-size', '8',
        '--eval-iters', '2', '--quiet']

def chadgpt(*args, home=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    "Run the installed `chadgpt` console script."
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    if home is not None: env['CHADGPT_HOME'] = str(home)
    exe = shutil.which('chadgpt')
    assert exe, "the chadgpt console script is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, **kw)
