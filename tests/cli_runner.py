"""The console scripts run in the test's own interpreter: the same entry function, the exit code, stdout and stderr.

A fresh interpreter per CLI call pays the torch / transformers import every time (about 5 s here); the refusal
matrix alone is 75 calls. What a process would give the call is given here too: its argv, its working folder,
its environment (HYDRA_FULL_ERROR and OMP_NUM_THREADS as read at start-up), Python's default warning filters
printing to its stderr, transformers' log lines on that stderr, and a clean Hydra and root logger afterwards.
What only a process shows (start-up, signals, variables read when the interpreter starts) stays with
`run_cli(..., process=True)`.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import logging.config
import os
import runpy
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

# `python -m <script>` -> the module whose main() the console script calls (pyproject.toml [project.scripts])
IN_PROCESS = {"dora_bench": "dora_bench.cli", "dora_bench.status": "dora_bench.status",
              "dora_bench.tables": "dora_bench.tables"}

# What a fresh interpreter starts with (python -W default would add nothing): warnings printed once per place,
# deprecations only from __main__.
PROCESS_WARNING_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                           ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                           ("ignore", ResourceWarning, ""))


@contextlib.contextmanager
def _process_state(script: str, args: list[str], cwd: Path, env: dict):
    """argv, working folder and environment as the process would have them; all restored afterwards."""
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv[:], os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value)
    sys.argv = [script, *args]
    os.chdir(cwd)
    import torch

    saved_threads = torch.get_num_threads()    # OMP_NUM_THREADS is read when a process starts: as it would be
    if env.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    # Hydra configures logging with dictConfig, which closes every handler alive in the interpreter; in a fresh
    # process there are none, here there are other tests' (absl's closes the stream it writes to, pytest's own).
    clear_handlers, logging.config._clearExistingHandlers = logging.config._clearExistingHandlers, logging._handlers.clear
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        logging.config._clearExistingHandlers = clear_handlers
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for handler in root.handlers[:]:   # Hydra's job logging: a console handler on our stream, a file handler
            root.removeHandler(handler)
            if handler not in saved_handlers:
                handler.close()
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()      # as at the end of a process: the next compose starts afresh


@contextlib.contextmanager
def _process_streams(stdout: io.StringIO, stderr: io.StringIO):
    """print(), warnings and transformers' log handler write where the process's stdout and stderr would be."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger()                       # creates transformers' handler if nothing has yet
    hf_handler = hf_logging._default_handler
    hf_stream = hf_handler.stream if hf_handler is not None else None
    if hf_handler is not None:
        hf_handler.setStream(stderr)

    def show(message, category, filename, lineno, file=None, line=None):
        stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(PROCESS_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = show
            yield
    finally:
        if hf_handler is not None:
            hf_handler.setStream(hf_stream)


def _call(script: str, args: list[str]) -> int:
    module = importlib.import_module(IN_PROCESS[script])
    if script == "dora_bench":
        # cli.py reads HYDRA_FULL_ERROR once, when the interpreter imports it; here it is imported already.
        module.SHOW_TRACEBACK = os.environ.get("HYDRA_FULL_ERROR") == "1"
        module.main()
        return 0
    returned = module.main(args)
    return returned if isinstance(returned, int) else 0


def _exit_code(call) -> int:
    """What the process would exit with: main()'s return, sys.exit's code, or 1 with the traceback printed."""
    try:
        return call()
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)   # sys.exit("message"): printed to stderr, exit code 1
        return 1
    except Exception:                        # an uncaught error: the traceback on stderr, exit code 1
        traceback.print_exc()
        return 1


def _completed(command: list[str], run, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    stdout, stderr = io.StringIO(), io.StringIO()
    with _process_state(command[0], command[1:], Path(cwd), env), _process_streams(stdout, stderr):
        code = _exit_code(run)
    return subprocess.CompletedProcess([sys.executable, *command], code, stdout.getvalue(), stderr.getvalue())


def run_in_process(script: str, args, *, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`python -m <script> *args` in this interpreter, as a CompletedProcess."""
    args = [str(a) for a in args]
    return _completed([script, *args], lambda: _call(script, args), cwd, env)


def run_script(path: Path, *args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python scripts/<name>.py *args` in this interpreter (its `if __name__ == "__main__"` block runs)."""
    args = [str(a) for a in args]

    def run() -> int:
        runpy.run_path(str(path), run_name="__main__")   # a script that returns normally exits 0
        return 0
    return _completed([str(path), *args], run, cwd, env or {})
