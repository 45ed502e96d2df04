"""The -j worker pool: processes started once and kept warm, cases sent in chunks, each result sent back
as its case ends.

Workers are forked where that is safe (Linux, this process on one thread, CUDA not started, and no case
runs plugin code): a fork is ready in milliseconds with torch already imported and warm, where a spawned
worker spends seconds importing it. Plugin code gets a spawned interpreter of its own: a fork shares
torch's OpenMP state with this process, and code that raises torch's thread count there hangs.

A worker that dies (plugin code calling os._exit, a segfault, the OOM killer) or runs past its hard
deadline costs only the case it was running: that case becomes an error, the rest of its chunk goes to a
fresh worker, and no result is lost. Whatever a worker's code prints lands in a file of its own, never on
the report's stdout; each case's share of it is added to that case's message.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import math
import os
import select
import signal
import sys
import tempfile
import time
import warnings
from multiprocessing.reduction import ForkingPickler as _ForkingPickler
from typing import Callable, Sequence

from .cases import KEEP_ELEMENTS, Case, CaseResult, Status, check_timeout, frozen_heap, run_case

WORKER_BYTES = 1 << 30        # memory a worker may need: torch itself (~0.4 GB) plus a sizeable case
MAX_OUTPUT = 4_000            # characters of a case's captured output kept in its message
MAX_START_FAILURES = 3        # workers that die before they are ready, in a row, before the pool gives up
MAX_CHUNK = 32                # cases sent to a worker at once, at most
MAX_AHEAD_BYTES = 32_768      # a chunk sent ahead, while the worker is busy, never fills the pipe between them


def machine_limits() -> tuple[int, int | None]:
    """(usable cores, available memory in bytes or None where unknown)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for row in handle:
                if row.startswith("MemAvailable:"):
                    return cores, int(row.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return cores, None


def clamp_jobs(jobs: int) -> tuple[int, str | None]:
    """-j N as this machine can run it, and a note when it was lowered."""
    cores, memory = machine_limits()
    limit = cores if memory is None else max(1, min(cores, memory // WORKER_BYTES))
    if jobs <= limit:
        return jobs, None
    room = f"{cores} core{'s' if cores != 1 else ''}" + ("" if memory is None else f", {memory / 1e9:.1f} GB available")
    return limit, f"-j {jobs} is more than this machine can run at once ({room}); using -j {limit}"


def chunk_size(remaining: int, runners: int) -> int:
    """Cases to send a worker at once. Small cases cost less than a round trip: a few at a time, fewer as
    the work runs out (guided scheduling), so that at the end no runner waits long on another's chunk."""
    return max(1, min(MAX_CHUNK, remaining // (max(1, runners) * 4)))


def _worker(conn, capture: str, timeout: float | None, keep: int, inherited: Sequence = ()) -> None:
    """A worker's life: send 'ready', then run each chunk it is sent, one result message a case."""
    for other in inherited:  # a forked worker's copies of its siblings' pipes: theirs alone to hold open
        other.close()
    fd = os.open(capture, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)  # plugin prints, C-level writes and warnings all land in the capture file
    # Python's own streams on those descriptors (a fork inherits whatever the parent had: a test
    # runner's buffer, a terminal's wrapper)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
    from .cases import warm_up
    warm_up(threads=1)
    gc.freeze()  # a spawned worker's torch, out of every full collection (a forked one inherits that)
    loads: dict[str, str] = {}
    conn.send(("ready", os.getpid()))
    while True:
        chunk = conn.recv()
        if chunk is None:
            return
        for index, case in chunk:
            loaded = [_load_output(ref, fd, loads) for ref in (case.options.plugins if case.runs_plugin_code else ())]
            os.ftruncate(fd, 0)
            result = run_case(case, timeout, keep)
            output = "\n".join(o for o in (*loaded, _read_capture(fd)) if o)
            if output:
                result = dataclasses.replace(result, message=_with_output(result.message, output))
            # each result as it ends: if the worker then dies or hangs, the case it was on is the first
            # one unanswered, and no finished result is lost with it
            conn.send(("result", (index, result)))


def _load_output(ref: str, fd: int, loads: dict[str, str]) -> str:
    """What a plugin printed while loading, the same for every case that uses it (on whichever worker)."""
    if ref not in loads:
        from .plugins import load_module
        os.ftruncate(fd, 0)
        try:
            load_module(ref)
        except Exception:  # the case itself loads it again and reports why (InputError or worse)
            return ""
        except SystemExit:
            return ""
        loads[ref] = _read_capture(fd)
    return loads[ref]


def _read_capture(fd: int) -> str:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    size = os.fstat(fd).st_size
    data = os.pread(fd, min(size, MAX_OUTPUT * 4), 0) if size else b""
    text = data.decode("utf-8", "replace").strip()
    return text[:MAX_OUTPUT] + (f" [... {size:,} bytes in all]" if size > MAX_OUTPUT else "") if text else ""


def _with_output(message: str, output: str) -> str:
    return (message + "\n" if message else "") + "output of the case's plugin code:\n" + output


@dataclasses.dataclass
class _Worker:
    process: object
    conn: object
    capture: str
    pending: list = dataclasses.field(default_factory=list)   # (index, case) sent and not yet answered
    ready: bool = False
    since: float = 0.0                                         # when its current case started


def _died(case: Case, worker: _Worker, seconds: float) -> CaseResult:
    code = worker.process.exitcode
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"ended with exit code {code}"
    message = (f"the worker process running this case {how} (plugin code that exits or crashes ends its case, "
               "not the batch)")
    try:
        with open(worker.capture, "rb") as handle:
            output = handle.read(MAX_OUTPUT).decode("utf-8", "replace").strip()
    except OSError:
        output = ""
    return CaseResult(case.file, case.line, case.name, Status.ERROR, _with_output(message, output) if output else message,
                      seconds)


def run_pool(work: Sequence[tuple[int, Case]], jobs: int, timeout: float | None,
             record: Callable[[int, CaseResult], None], keep: int = KEEP_ELEMENTS, local: bool = False) -> None:
    """Run `work` on warm workers, calling record(index, result) for each case as it ends.

    With `local`, this process is one of the `jobs` runners: it runs cases that run no plugin code itself
    (from the back of the list, as -j 1 would run them) while jobs - 1 workers take chunks from the front,
    so the seconds a worker takes to start (spawn, import torch) are spent checking cases, not waiting,
    and a batch that ends before a worker is ready never waits for it. Cases that run plugin code always
    go to a worker (`jobs` of them when this process has no case of its own, and one more when it is done
    with its own while many remain). Without `local`, `jobs` workers run everything.
    """
    context = _context(any(c.runs_plugin_code for _, c in work))
    timeout = check_timeout(timeout)
    isolated = collections.deque((i, c) for i, c in work if not local or c.runs_plugin_code)
    shared = collections.deque((i, c) for i, c in work if local and not c.runs_plugin_code)
    count = min(jobs - 1 if shared else jobs, len(isolated) + len(shared))  # workers; this process is one more
    runners = max(1, count + (1 if shared else 0))
    hard = None if timeout is None else timeout * 1.5 + 10.0  # SIGALRM first; this only if the case ignores it
    workers: list[_Worker] = []
    failures = 0

    def requeue(items: Sequence[tuple[int, Case]]) -> None:
        for item in reversed(items):
            (shared if local and not item[1].runs_plugin_code else isolated).appendleft(item)

    def chunk() -> int:
        return chunk_size(len(isolated) + len(shared), runners)

    def take() -> list[tuple[int, Case]]:
        taken = []
        size = chunk()
        while len(taken) < size and (isolated or shared):
            taken.append((isolated or shared).popleft())
        return taken

    with tempfile.TemporaryDirectory(prefix="gradcheck-pool-") as folder, _one_thread(local), \
            contextlib.ExitStack() as stack:
        serial = iter(range(1 << 30))

        def start() -> _Worker:
            parent, child = context.Pipe()
            capture = os.path.join(folder, f"worker-{next(serial)}.out")
            inherited = [w.conn for w in workers] + [parent] if context.get_start_method() == "fork" else []
            process = context.Process(target=_worker, args=(child, capture, timeout, keep, inherited), daemon=True)
            for stream in (sys.stdout, sys.stderr):  # a fork copies unwritten output: write it once, here
                if stream is not None:
                    stream.flush()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with torch's own threads
                process.start()
            child.close()
            return _Worker(process, parent, capture)

        def retire(worker: _Worker, why: Callable[[Case, float], CaseResult], grace: float = 0.0) -> None:
            nonlocal failures
            worker.process.join(timeout=grace)
            worker.conn.close()
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join()
            workers.remove(worker)
            failures = 0 if worker.ready else failures + 1
            if worker.pending:
                index, case = worker.pending[0]
                record(index, why(case, time.perf_counter() - worker.since))
                requeue(worker.pending[1:])
            if failures >= MAX_START_FAILURES:
                while isolated:
                    index, case = isolated.popleft()
                    record(index, CaseResult(case.file, case.line, case.name, Status.ERROR,
                                             "could not start a worker process (each one ended before it was ready)", 0.0))

        def restart() -> None:
            if len(workers) < count and failures < MAX_START_FAILURES:
                workers.append(start())

        def dispatch() -> None:
            for worker in list(workers):
                if not worker.ready:
                    continue
                if not isolated and not shared and not worker.pending:
                    worker.conn.send(None)
                    retire(worker, lambda case, s: None, grace=30.0)
                    continue
                # the next chunk goes out while the worker is still on its last one (it never waits on this
                # process, which may be running a case of its own), unless the chunk would fill the pipe
                if len(worker.pending) < max(2, chunk()) and (isolated or shared):
                    taken = take()
                    message = _ForkingPickler.dumps(taken)
                    if worker.pending and len(message) > MAX_AHEAD_BYTES:
                        requeue(taken)
                        continue
                    if not worker.pending:
                        worker.since = time.perf_counter()
                    worker.pending.extend(taken)
                    worker.conn.send_bytes(message)

        def collect(wait_for: float | None) -> None:
            if wait_for is None and hard is not None:
                busy = [w.since + hard for w in workers if w.pending]
                wait_for = max(0.0, min(busy) - time.perf_counter()) + 0.01 if busy else None
            ready = _ready([h for w in workers for h in (w.conn.fileno(), w.process.sentinel)], wait_for)
            for worker in list(workers):
                alive = True
                try:
                    readable = worker.conn.fileno() in ready
                    while readable:
                        kind, body = worker.conn.recv()
                        readable = bool(_ready([worker.conn.fileno()], 0.0))
                        if kind == "ready":
                            worker.ready = True
                            continue
                        index, result = body
                        worker.pending.pop(0)
                        worker.since = time.perf_counter()
                        record(index, result)
                except (EOFError, OSError):
                    alive = False
                if not alive or worker.process.sentinel in ready and not worker.process.is_alive():
                    retire(worker, lambda case, s, w=worker: _died(case, w, s), grace=5.0)
                    if isolated or shared or any(w.pending for w in workers):
                        restart()
                elif hard is not None and worker.pending and time.perf_counter() - worker.since > hard:
                    retire(worker, lambda case, s: CaseResult(
                        case.file, case.line, case.name, Status.ERROR,
                        f"timed out after {timeout:g} s (its worker did not answer; it was stopped)", s))
                    if isolated or shared:
                        restart()
            if not workers and isolated:
                restart()

        try:
            # torch's first-use imports, charged to no case's time: before a fork (every worker inherits
            # them), or while spawned workers import torch themselves
            from .cases import warm_up
            forked = context.get_start_method() == "fork"
            if forked:
                warm_up()
                stack.enter_context(frozen_heap())  # before the fork: workers inherit it
            workers.extend(start() for _ in range(count))
            if shared and not forked:
                warm_up()
            if not forked:
                stack.enter_context(frozen_heap())
            while workers or shared:
                dispatch()
                if shared:
                    index, case = shared.pop()
                    record(index, run_case(case, timeout, keep))
                    if workers:
                        collect(0.0)
                    if not shared and count < jobs and len(isolated) > 4 * chunk():
                        count += 1  # this process is done with its share: a worker takes its place
                        restart()
                    continue
                if not isolated and not any(w.pending for w in workers):
                    for worker in [w for w in workers if not w.ready]:  # a batch never waits for a worker to start
                        retire(worker, lambda case, s: None)
                    continue  # dispatch() sends the ready ones home
                collect(None)
        finally:
            for worker in workers:
                if worker.process.is_alive():
                    worker.process.kill()
                worker.process.join()


def _ready(handles: Sequence[int], timeout: float | None) -> set[int]:
    """Those of the descriptors `handles` that can be read (or are closed), waiting up to `timeout` seconds
    (None: until one is). One poll(2) call: multiprocessing's wait() builds a selector on every call, and
    this process asks after every case it runs itself."""
    if not hasattr(select, "poll"):  # pragma: no cover  (Windows: multiprocessing's own wait)
        from multiprocessing.connection import wait
        return set(wait(list(handles), timeout=timeout))
    poller = select.poll()
    for handle in handles:
        poller.register(handle, select.POLLIN)
    wait_ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return {fd for fd, _ in poller.poll(wait_ms)}


def _context(plugin_code: bool):
    """fork where it is safe, else spawn (see the module doc)."""
    import multiprocessing
    import threading
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_initialized()
    if sys.platform.startswith("linux") and threading.active_count() == 1 and not cuda and not plugin_code:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def _one_thread(local: bool):
    """While this process runs cases beside its workers, it runs them on one torch thread, as they do."""
    if not local:
        yield
        return
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
