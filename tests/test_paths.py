"""Every name a user gives lands inside its folder (issue 22): token folders under `<home>/tokens` however a dataset is
named, and no name from a request, a flag or a file reaches outside `data/`, `models/` or `tokens/`, links included."""
import os, shutil
from pathlib import Path
import pytest
from chadgpt.core import ChadGPTError
from chadgpt.store import Store
from chadgpt.tokens import prepare
from conftest import TINY, chadgpt

TEXT = "to be or not to be, that is the question\n" * 60

@pytest.fixture
def place(tmp_path, shakespeare):
    "`(home, outside)`: a home with Tiny Shakespeare and one upload, and a folder of the user's beside it."
    home, outside = tmp_path/'home', tmp_path/'outside'
    (home/'data').mkdir(parents=True); outside.mkdir()
    shutil.copy(shakespeare, home/'data'/'tinyshakespeare.txt')
    (home/'data'/'notes.txt').write_text(TEXT)
    (outside/'corpus.txt').write_text(TEXT)
    return home, outside

def snapshot(root:Path, skip:Path) -> dict:
    "Every path under `root` but those under `skip`, with its size and modification time (links not followed)."
    out = {}
    for dirpath, dirs, files in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents: dirs.clear(); continue
        for n in dirs + files:
            if d/n == skip: continue
            st = (d/n).lstat()
            out[str((d/n).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out

def lands_in_home(home, dataset, *, cwd=None, expect=None):
    "Prepare `dataset` (from `cwd`) and check: its folder is a child of `<home>/tokens`, and nothing outside home changed."
    root = home.parent
    before = snapshot(root, home)
    old = os.getcwd()
    if cwd: os.chdir(cwd)
    try: td = prepare(dataset, 'char', home)
    finally: os.chdir(old)
    assert td.folder.resolve().parent == (home/'tokens').resolve(), td.folder
    assert snapshot(root, home) == before, "something outside the home changed"
    if expect is not None: assert td.folder.name == expect
    assert td.meta['train_tokens'] > 0
    return td

def test_absolute_path(place):
    home, outside = place
    td = lands_in_home(home, str(outside/'corpus.txt'))
    assert td.folder.name.startswith('corpus-') and td.folder.name.endswith('.char')
    assert lands_in_home(home, outside/'corpus.txt').folder == td.folder            # str or Path: one folder

def test_relative_paths_with_dotdot(place):
    home, outside = place
    td = lands_in_home(home, 'corpus.txt', cwd=outside)
    assert lands_in_home(home, '../outside/corpus.txt', cwd=outside).folder == td.folder   # the same file
    assert lands_in_home(home, '../../outside/./corpus.txt', cwd=home/'data').folder == td.folder
    # a relative path that climbs out of the data folder and back in is the data folder's file
    lands_in_home(home, '../data/notes.txt', cwd=outside/'..'/'home'/'data', expect='notes.txt.char')

def test_a_file_in_the_data_folder_named_by_path(place):
    home, _ = place
    for ds in ('notes.txt', str(home/'data'/'notes.txt'), home/'data'/'..'/'data'/'notes.txt'):
        lands_in_home(home, ds, expect='notes.txt.char')

def test_symlinks(place):
    home, outside = place
    (home/'data'/'linked.txt').symlink_to(outside/'corpus.txt')              # a link in data/ to the user's file
    lands_in_home(home, 'linked.txt', expect='linked.txt.char')
    (outside/'link-to-notes.txt').symlink_to(home/'data'/'notes.txt')        # a link outside, into data/
    lands_in_home(home, outside/'link-to-notes.txt')
    (outside.parent/'dirlink').symlink_to(outside, target_is_directory=True)  # a linked folder: the same real file
    a = lands_in_home(home, outside/'corpus.txt')
    assert lands_in_home(home, outside.parent/'dirlink'/'corpus.txt').folder == a.folder
    (home/'tokens'/'escape.char').symlink_to(outside, target_is_directory=True)   # a token folder that is a link out
    (home/'data'/'escape').write_text(TEXT)
    with pytest.raises(ChadGPTError, match="link that leads outside the tokens folder"): prepare('escape', 'char', home)
    assert sorted(p.name for p in outside.iterdir()) == ['corpus.txt', 'link-to-notes.txt']

@pytest.mark.parametrize('filename', ['my.corpus.v2.txt', 'my corpus.txt', 'th\u00e9\u00e2tre \u2603.txt', '-dash.txt',
                                      '\u2603.txt'])
def test_names_with_dots_spaces_unicode(place, filename):
    home, outside = place
    (home/'data'/filename).write_text(TEXT)
    (outside/filename).write_text(TEXT)
    inside = lands_in_home(home, filename)
    if filename == 'my.corpus.v2.txt': assert inside.folder.name == 'my.corpus.v2.txt.char'
    else: assert inside.folder.name.isascii() and ' ' not in inside.folder.name
    assert lands_in_home(home, outside/filename).folder != inside.folder       # two files of one name: two folders

@pytest.mark.parametrize('dataset', ['shakespeare', 'shakespeare.txt', 'data/tinyshakespeare.txt'])
def test_builtins_and_aliases(place, dataset):
    home, _ = place
    lands_in_home(home, home/dataset if '/' in dataset else dataset, expect='shakespeare.char')

def test_old_token_folders_are_found_or_prepared_again_once(place):
    home, outside = place
    first = lands_in_home(home, 'notes.txt', expect='notes.txt.char')           # the layout of a data file is unchanged
    stamp = (first.folder/'train.bin').stat().st_mtime_ns
    assert (prepare('notes.txt', 'char', home).folder/'train.bin').stat().st_mtime_ns == stamp   # found, not rebuilt
    old = outside/'corpus.txt.char'                                             # what main at fa96a23 left beside the file
    shutil.copytree(first.folder, old)
    before = snapshot(outside, home)
    td = prepare(outside/'corpus.txt', 'char', home)                           # prepared again once, in the home
    assert td.folder.parent == home/'tokens' and snapshot(outside, home) == before
    stamp = (td.folder/'train.bin').stat().st_mtime_ns
    assert (prepare(outside/'corpus.txt', 'char', home).folder/'train.bin').stat().st_mtime_ns == stamp

def test_the_reported_command(place):
    "The issue's command: `chadgpt train --home H --dataset /some/dir/corpus.txt` writes nothing beside the corpus."
    home, outside = place
    r = chadgpt('train', '--home', home, '--dataset', outside/'corpus.txt', '--name', 'b', '--max-iters', 2,
                '--eval-interval', 2, *TINY)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in outside.iterdir()) == ['corpus.txt']
    assert [p.name for p in (home/'tokens').iterdir() if not p.name.startswith('.')][0].startswith('corpus-')
    r = chadgpt('train', '--home', home, '--name', 'b', '--resume', '--max-iters', 4, *TINY)     # resumes from the file
    assert r.returncode == 0, r.stderr

# ---- the same rule wherever a request names a file or folder --------------------------------------------------

def test_store_refuses_links_out_of_its_folders(place):
    home, outside = place
    store = Store(home)
    (home/'data'/'out.txt').symlink_to(outside/'corpus.txt')
    (home/'models').mkdir()
    (outside/'victim').mkdir(); (outside/'victim'/'chadgpt.json').write_text('{"format": 2, "model": {}}')
    (home/'models'/'out').symlink_to(outside/'victim', target_is_directory=True)
    before = snapshot(outside.parent, home)
    calls = [lambda: store.dataset_info('out.txt'), lambda: store.save_dataset('out.txt', b'new text', overwrite=True),
             lambda: store.delete_dataset('out.txt'), lambda: store.train('m', dataset='out.txt'),
             lambda: store.status('out'), lambda: store.model_info('out'), lambda: store.delete_model('out'),
             lambda: store.load('out')]
    for call in calls:
        with pytest.raises(ChadGPTError, match="is a link that leads outside the (data|models) folder"): call()
    assert snapshot(outside.parent, home) == before
    assert (outside/'corpus.txt').read_text() == TEXT and (outside/'victim'/'chadgpt.json').is_file()
    for bad in ('../outside/corpus.txt', '/etc/passwd', '..', '.hidden'):
        with pytest.raises(ChadGPTError, match="invalid"): store.save_dataset(bad, b'x')
        with pytest.raises(ChadGPTError, match="invalid"): store.delete_model(bad)
    store.shutdown()

def test_model_names_on_the_command_line(place):
    home, outside = place
    (home/'models').mkdir()
    (home/'models'/'away').symlink_to(outside, target_is_directory=True)
    r = chadgpt('train', '--home', home, '--name', 'away', '--max-iters', 2, *TINY)
    assert r.returncode == 2 and "model 'away' is a link that leads outside the models folder" in r.stderr, r.stderr
    r = chadgpt('train', '--home', home, '--name', '../escape', '--max-iters', 2, *TINY)
    assert r.returncode == 2 and "invalid model name '../escape'" in r.stderr, r.stderr
    assert sorted(p.name for p in outside.iterdir()) == ['corpus.txt'] and not (home/'escape').exists()

def test_shard_names_from_an_index_file_are_file_names(tmp_path):
    import json
    from chadgpt.model import _read_tensors
    (tmp_path/'model.safetensors.index.json').write_text(json.dumps({'weight_map': {'a': '../../etc/passwd'}}))
    with pytest.raises(ChadGPTError, match="invalid shard file name '../../etc/passwd'"): _read_tensors(tmp_path)
