"""What a child of the tests' fork server runs (conftest.py's `chadgpt` and `Server`): `chadgpt.cli.main` as the console
script would, with its own environment, working directory and files. The fork server imports this module, and with it
the package and torch, once; it imports nothing the tests need, so each child starts in milliseconds."""
import os, sys, traceback
import chadgpt.cli

def run(args, env, cwd, stdin, out, err):
    "In a child of the fork server: run `chadgpt.cli.main(args)` as the console script would, with its own files."
    os.environ.clear(); os.environ.update(env)
    if cwd is not None: os.chdir(cwd)
    for fd, path, mode in ((0, stdin, os.O_RDONLY), (1, out, os.O_WRONLY | os.O_APPEND), (2, err, os.O_WRONLY | os.O_APPEND)):
        f = os.open(path, mode); os.dup2(f, fd); os.close(f)
    sys.stdin = open(0, 'r', encoding='utf-8', closefd=False)
    sys.stdout, sys.stderr = (open(fd, 'w', encoding='utf-8', closefd=False, buffering=1) for fd in (1, 2))   # as PYTHONUNBUFFERED:
    # what a server logs is in its file while it runs
    sys.argv = ['chadgpt', *args]
    try: code = chadgpt.cli.main(list(args))
    except SystemExit as e: code = e.code
    except BaseException: traceback.print_exc(); code = 1
    if isinstance(code, str): print(code, file=sys.stderr); code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code or 0)
