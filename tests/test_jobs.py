"""Training jobs in their own processes: the child's command line says exactly what was checked, and the limits on it
are real."""
import json, signal, time
from dataclasses import replace
import pytest
from chadgpt.cli import build_parser, _configs
from chadgpt.model import GPTConfig
from chadgpt.train import Source, TrainConfig, TrainingRun, arch_configs
from chadgpt.chat import sft_run
from chadgpt.store import PROGRESS, Store, estimate_train_bytes, exit_reason, job_argv
from chadgpt.checkpoint import read_json

TINY = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embed=32)

def parsed(run, home, resume=False):
    "The configs the child works out from its command line."
    return build_parser().parse_args(job_argv(run, home, resume, home/'progress.jsonl'))

@pytest.mark.parametrize('arch,tokenizer', [('lecture', 'char'), ('modern', 'word')])
def test_the_child_command_line_is_the_checked_run(home, arch, tokenizer):
    m, t = arch_configs(arch, {'n_layer': 1, 'n_embed': 32, 'n_head': 2, 'block_size': 32, 'dropout': 0.1},
                        {'max_iters': 7, 'learning_rate': 1/3, 'min_lr': 1e-5, 'seed': 2**32 - 1})
    run = TrainingRun.new('m', m, t, Source('shakespeare', tokenizer, home, paths=False))
    args = parsed(run, home)
    mcfg, tcfg = _configs(args)
    assert replace(mcfg, vocab_size=run.model_config.vocab_size, vocab_multiple=run.model_config.vocab_multiple) == run.model_config
    assert tcfg == run.train_config                                  # floats round-trip exactly (repr)
    assert (args.name, args.dataset, args.tokenizer, args.overwrite, args.resume) == ('m', 'shakespeare', tokenizer, True, False)
    assert all(a.startswith('--') for a in job_argv(run, home, False, home/'p')[1:])   # one --flag=value argument each

def test_a_resumed_and_a_fine_tuning_command_line(home):
    TrainingRun.new('base', replace(TINY, block_size=128), TrainConfig(max_iters=2, eval_interval=2, eval_iters=1, batch_size=4),
                    Source('shakespeare', 'char', home, paths=False)).run(progress=False)
    run = TrainingRun.resume('base', Source(None, None, home, paths=False), TrainConfig(max_iters=9, batch_size=4))
    args = parsed(run, home, resume=True)
    assert args.resume and not args.overwrite and args.dataset is None and args.tokenizer is None
    assert _configs(args)[1] == run.train_config
    sft = sft_run('chatty', 'base', Source('shakespeare-chat', None, home, paths=False), TrainConfig(max_iters=3, batch_size=4))
    argv = job_argv(sft, home, False, home/'p')
    assert argv[0] == 'sft' and argv[-2:] == ['--', 'base'] and '--data=shakespeare-chat.jsonl' in argv
    args = build_parser().parse_args(argv)
    assert (args.base, args.name, args.max_iters, args.dropout) == ('base', 'chatty', 3, 0.0)

def test_the_memory_limit_is_real(home, monkeypatch):
    "A job whose processes outgrow the limit fails alone, with a line that says so; the store goes on."
    monkeypatch.setenv('OMP_NUM_THREADS', '2')     # what the process takes depends on its threads (with one it fits)
    need = estimate_train_bytes(replace(TINY, vocab_size=65), 8)
    store = Store(home, max_job_bytes=int(need * 1.1))            # below what a training process takes (~350 MB)
    try:
        store.train('big', TINY, TrainConfig(batch_size=8, max_iters=20, eval_iters=2, device='cpu'))
        while store.status('big')['state'] in ('queued', 'running'): time.sleep(0.1)
        st = store.status('big')
        assert st['state'] == 'failed' and 'ran out of memory' in st['error'] and 'MiB' in st['error'], st
        assert read_json(home/'jobs'/'big'/'job.json')['memory_limit'] == int(need * 1.1)
        store.max_job_bytes = None                                 # the same job, unlimited: trains
        store.train('big', TINY, TrainConfig(batch_size=8, max_iters=5, eval_interval=5, eval_iters=2, device='cpu'))
        while store.status('big')['state'] in ('queued', 'running'): time.sleep(0.1)
        assert store.status('big')['state'] == 'done'
        assert [json.loads(l)['step'] for l in (home/'jobs'/'big'/PROGRESS).read_text().splitlines()][-1] == 5
    finally: store.shutdown()

def test_exit_reasons(tmp_path):
    log = tmp_path/'log.txt'
    log.write_text("some warning\nchadgpt train: error: unknown dataset 'x'\n")
    assert exit_reason(2, log) == "unknown dataset 'x'"
    log.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n")
    assert exit_reason(1, log) == 'RuntimeError: boom'
    assert 'SIGKILL' in exit_reason(-signal.SIGKILL, log) and 'resume' in exit_reason(-signal.SIGKILL, log)
    assert 'SIGSEGV' in exit_reason(-signal.SIGSEGV, log)
    log.write_text("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes\n")
    assert exit_reason(1, log, 2**30).startswith('ran out of memory: this server lets the job use 1,024 MiB')
    assert exit_reason(3, tmp_path/'missing') == "the job's process exited with status 3"

def test_a_restarted_server_survives_damaged_job_files(tmp_path):
    "job.json files a crash (or a person) left damaged never stop a server from starting; a reused pid is not adopted."
    for name, text in {'a': '{"state": "running", "pid": "x"}', 'b': '{"state": "running", "pid": 1, "created": 5.0}',
                       'c': '{"state": "queued"}', 'd': '"not an object"', 'e': '{bad'}.items():
        (tmp_path/'jobs'/name).mkdir(parents=True)
        (tmp_path/'jobs'/name/'job.json').write_text(text)
    store = Store(tmp_path)
    assert {n: j.state for n, j in store.jobs.items()} == {'c': 'failed'}      # pid 1 is alive, but not the job's process
    assert 'before this job started' in store.status('c')['error']

def test_a_job_cancelled_while_its_process_starts_is_not_left_running(home, monkeypatch):
    "Cancel waits for a start under way and stops that process: once it answers, the job no longer holds its place."
    import chadgpt.store as store_module
    started, real_start = [], store_module.JobProcess.start
    def slow_start(*a, **kw):
        started.append(time.monotonic()); time.sleep(1.0)            # the worker is inside the start when cancel comes
        return real_start(*a, **kw)
    monkeypatch.setattr(store_module.JobProcess, 'start', staticmethod(slow_start))
    store = Store(home, workers=1)
    try:
        store.train('a', TINY, TrainConfig(batch_size=8, max_iters=100_000, eval_interval=1000, eval_iters=2, device='cpu'))
        while not started: time.sleep(0.01)
        st = store.cancel('a')
        assert st['state'] == 'cancelled', st
        seen = set()
        for _ in range(30): seen.add(store.status('a')['state']); time.sleep(0.1)   # past the start: the worker does not
        assert seen == {'cancelled'}, seen                                # set it back to running
        store.train('b', TINY, TrainConfig(batch_size=8, max_iters=3, eval_interval=3, eval_iters=2, device='cpu'))
        while store.status('b')['state'] in ('queued', 'running'): time.sleep(0.1)
        assert store.status('b')['state'] == 'done'
    finally: store.shutdown()
