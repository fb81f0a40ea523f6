"""Data-parallel training with torchrun on CPU (Gloo, 127.0.0.1 only): the same losses whatever the world size, one
writer, resuming at another world size, two "nodes", and a worker killed mid-run that the group survives."""
import json, os, subprocess, sys, time
from pathlib import Path
import psutil, pytest
from conftest import REPO, chadgpt, free_port

FLAGS = ['--n-layer', '1', '--n-embed', '32', '--n-head', '2', '--block-size', '32', '--batch-size', '4',
         '--eval-iters', '2', '--quiet']
ENV = {'GLOO_SOCKET_IFNAME': 'lo', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}

def torchrun(home, *args, nproc=2, extra_env=None, timeout=240, wait=True, launcher=()):
    "Start `torchrun ... -m chadgpt train ARGS` on 127.0.0.1 in its own process group."
    cmd = [sys.executable, '-m', 'torch.distributed.run', *(launcher or ['--standalone']), '--nproc-per-node', str(nproc),
           '-m', 'chadgpt', 'train', '--home', str(home), *map(str, args)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         env={**os.environ, **ENV, **(extra_env or {})})
    if not wait: return p
    return finish(p, timeout)

def kill_tree(pid):
    "Kill a launcher and every process under it (torchrun starts its workers in sessions of their own)."
    try: procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess: return
    for q in procs:
        try: q.kill()
        except psutil.NoSuchProcess: pass

def finish(p, timeout=240):
    "Wait for a launcher; on timeout kill it and its workers and fail with its output."
    try: out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p.pid); out, _ = p.communicate()
        pytest.fail(f"torchrun timed out:\n{out[-3000:]}")
    return p.returncode, out

def metrics(home, name): return [json.loads(l) for l in (home/'models'/name/'metrics.jsonl').read_text().splitlines()]

def close(a, b, tol=2e-4):
    assert [m['step'] for m in a] == [m['step'] for m in b]
    for x, y in zip(a, b):
        assert abs(x['val_loss'] - y['val_loss']) < tol and abs(x['train_loss'] - y['train_loss']) < tol, (x, y)

def test_world_size_does_not_change_the_run(home, tmp_path):
    run = ['--max-iters', 30, '--eval-interval', 10, *FLAGS]
    assert chadgpt('train', '--name', 'one', '--grad-accum', 2, *run, home=home).returncode == 0   # 1 process × 2
    # every os.replace (how chadgpt writes any file) logged per rank: only rank 0 may write the model folder
    (tmp_path/'hook').mkdir()
    (tmp_path/'hook'/'sitecustomize.py').write_text(
        "import os\n_replace = os.replace\n"
        "def replace(a, b, *k, **kw):\n"
        f"    with open(os.path.join({str(tmp_path)!r}, 'writes-' + os.environ.get('RANK', 'x')), 'a') as f: f.write(str(b) + '\\n')\n"
        "    return _replace(a, b, *k, **kw)\n"
        "os.replace = replace\n")
    code, out = torchrun(home, '--name', 'two', *run, extra_env={'PYTHONPATH': f"{tmp_path/'hook'}:{REPO}"})
    assert code == 0, out
    assert out.count("trained 'two' to step 30") == 1                            # rank 0 alone reports
    close(metrics(home, 'one'), metrics(home, 'two'))
    rank0, rank1 = [(tmp_path/f'writes-{r}').read_text().splitlines() if (tmp_path/f'writes-{r}').exists() else [] for r in '01']
    assert any('/models/two/' in w for w in rank0)
    assert not any('/models/' in w for w in rank1), rank1
    st = json.loads((home/'models'/'two'/'state.json').read_text())
    assert st['processes'] == 2 and st['status'] == 'done' and st['step'] == 30

def test_resume_at_another_world_size_and_across_two_nodes(home):
    run = [*FLAGS, '--eval-interval', 10]
    code, out = torchrun(home, '--name', 'ref', '--max-iters', 40, *run)             # 2 processes, start to end
    assert code == 0, out
    code, out = torchrun(home, '--name', 'half', '--max-iters', 20, *run)            # 2 processes to step 20 ...
    assert code == 0, out
    r = chadgpt('train', '--name', 'half', '--resume', '--max-iters', 40, '--grad-accum', 2, home=home)   # ... 1 × 2 to 40
    assert r.returncode == 0, r.stderr
    close(metrics(home, 'ref'), metrics(home, 'half'))
    port = free_port()                                                                # two nodes of one process each
    nodes = [torchrun(home, '--name', 'nodes', '--max-iters', 40, *run, nproc=1, wait=False,
                      launcher=['--nnodes', '2', '--node-rank', str(i), '--rdzv-backend', 'c10d', '--rdzv-id', 'chadgpt-test',
                                '--rdzv-endpoint', f'127.0.0.1:{port}', '--master-addr', '127.0.0.1']) for i in range(2)]
    for p in nodes:
        code, out = finish(p)
        assert code == 0, out
    close(metrics(home, 'ref'), metrics(home, 'nodes'))

def test_a_killed_worker_restarts_the_group_from_the_checkpoint(home):
    p = torchrun(home, '--name', 'elastic', '--max-iters', 600, '--eval-interval', 100, *FLAGS, wait=False,
                 launcher=['--standalone', '--max-restarts', '1'])
    weights, deadline = home/'models'/'elastic'/'model.safetensors', time.monotonic() + 120
    while True:                                   # wait for a checkpoint past step 0
        st = home/'models'/'elastic'/'state.json'
        if weights.exists() and st.exists() and json.loads(st.read_text() or '{}').get('step', 0) >= 200: break
        assert time.monotonic() < deadline and p.poll() is None, finish(p)[1]
        time.sleep(0.1)
    victim = next(c for c in psutil.Process(p.pid).children(recursive=True)
                  if 'chadgpt' in ' '.join(c.cmdline()) and c.environ().get('RANK') == '1')
    victim.kill()                                  # kill -9 of one worker mid-run
    code, out = finish(p)
    assert code == 0, out
    st = json.loads((home/'models'/'elastic'/'state.json').read_text())
    assert st['status'] == 'done' and st['step'] == 600, st
    steps = [m['step'] for m in metrics(home, 'elastic')]
    assert steps == list(range(0, 601, 100)), steps                                     # nothing lost, nothing twice
    r = chadgpt('sample', 'elastic', '--tokens', 20, home=home)
    assert r.returncode == 0, r.stderr

def test_sigterm_stops_every_rank_at_one_step_with_a_checkpoint(home):
    p = torchrun(home, '--name', 'term', '--max-iters', 100_000, '--eval-interval', 100, *FLAGS, wait=False)
    st, deadline = home/'models'/'term'/'state.json', time.monotonic() + 120
    while not (st.exists() and json.loads(st.read_text() or '{}').get('step', 0) >= 100):
        assert time.monotonic() < deadline and p.poll() is None, finish(p)[1]
        time.sleep(0.1)
    p.send_signal(15)                                  # SIGTERM to torchrun, as a scheduler would send it
    code, out = finish(p, timeout=90)
    state = json.loads(st.read_text())
    assert state['status'] == 'cancelled' and 0 < state['step'] < 100_000, (state, out[-2000:])
    assert "stopped at step" in out and '[rank' not in out, out[-3000:]   # (torchrun itself reports the signal it got)
    r = chadgpt('train', '--name', 'term', '--resume', '--max-iters', state['step'] + 10, *FLAGS, home=home)
    assert r.returncode == 0, r.stderr                 # the checkpoint it saved resumes
