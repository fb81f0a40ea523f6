"""The data layer offline: a present file is verified and reused, a missing one says where to put it."""
import urllib.error, urllib.request
import pytest
from chadgpt.core import ChadGPTError
from chadgpt.data import BUILTINS, fetch_builtin, load_dataset

def test_present_file_is_used_without_network(home, monkeypatch):
    def no_network(*a, **k): raise AssertionError("tried to download")
    monkeypatch.setattr(urllib.request, 'urlopen', no_network)
    assert fetch_builtin('shakespeare', home) == home/'data'/'tinyshakespeare.txt'
    d = load_dataset('shakespeare', home)
    assert d.vocab_size == 65 and len(d.train) + len(d.val) == BUILTINS['shakespeare'].size

def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(ChadGPTError, match="put the file at .*data/tinyshakespeare.txt"):
        fetch_builtin('shakespeare', tmp_path)
    assert not (tmp_path/'data'/'tinyshakespeare.txt').exists()
    assert list((tmp_path/'data').iterdir()) == []   # no half-written download left behind

def test_corrupt_file_is_refused(home):
    p = home/'data'/'tinyshakespeare.txt'
    p.write_text(p.read_text()[:-1] + 'X')
    with pytest.raises(ChadGPTError, match="wrong size or sha256"): fetch_builtin('shakespeare', home)
