"""Running the TFF processes on TFF worker services: how they scale past one machine.

Each host runs TFF's C++ worker service (`worker_binary --port=P`, shipped inside the
tensorflow-federated package; `worker_binary_path()` finds it). The driver points TFF's
execution context at the workers: one worker gets a remote execution context; several get a
mergeable-computation context that splits each round's clients across them and merges the
per-worker sums (FedAP's round is broadcast, client work, federated sum and a server step,
so it splits this way).

Federated environment only (tensorflow-federated 0.87).

Example:
>>> set_remote_execution_context(["10.0.0.5:8000", "10.0.0.6:8000"])   # doctest: +SKIP
>>> state = process.next(state, client_data)                          # runs on both hosts
"""

from __future__ import annotations

import os
import signal
import subprocess
import time


def let_workers_stop_on_sigint() -> None:
    """Makes the TFF workers started from now on stoppable by SIGINT.

    TFF stops the local worker it started with SIGINT and then waits for it. A process started
    in the background by a non-interactive shell has SIGINT ignored, its children inherit
    that, and the wait never ends (a switch of execution context hangs). Restoring Python's
    default handler gives the workers started afterwards the default action again.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def worker_binary_path() -> str:
    """Path of TFF's worker service binary in the installed tensorflow-federated package."""
    import tensorflow_federated as tff

    path = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
    if not os.path.isfile(path):
        raise RuntimeError(f"no TFF worker binary at {path}")
    return path


def start_worker(port: int, log=subprocess.DEVNULL) -> subprocess.Popen:
    """Starts a worker service on this host at `port` (in its own process group, so that
    stopping it never touches the caller)."""
    return subprocess.Popen([worker_binary_path(), f"--port={port}"], stdout=log, stderr=log,
                            start_new_session=True)


def _remote_context(address: str, asynchronous: bool, timeout: float = 60.0):
    import grpc
    from tensorflow_federated.python.core.backends.native import compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.execution_contexts import (async_execution_context,
                                                                          sync_execution_context)
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.executors import remote_executor, remote_executor_grpc_stub
    from tensorflow_federated.python.core.impl.types import placements

    stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + timeout
    while not stub.is_ready:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the TFF worker at {address} did not answer within {timeout:.0f} s")
        time.sleep(0.2)

    def executor_for(cardinalities):
        # Computations without client arguments (e.g. `initialize`) name no client count.
        cardinalities = {placements.CLIENTS: 0, **cardinalities}
        executor = remote_executor.RemoteExecutor(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    factory = python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=executor_for)
    context_class = (async_execution_context.AsyncExecutionContext if asynchronous
                     else sync_execution_context.SyncExecutionContext)
    return context_class(executor_fn=factory, compiler_fn=compiler.desugar_and_transform_to_native,
                         transform_args=tensorflow_computation.transform_args,
                         transform_result=tensorflow_computation.transform_result)


def set_remote_execution_context(addresses: list[str], timeout: float = 60.0) -> None:
    """Makes every following TFF computation run on the workers at `addresses` ("host:port")."""
    import tensorflow_federated as tff

    if not addresses:
        raise ValueError("expected at least one worker address host:port")
    let_workers_stop_on_sigint()
    if len(addresses) == 1:
        context = _remote_context(addresses[0], asynchronous=False, timeout=timeout)
    else:
        context = tff.backends.native.create_mergeable_comp_execution_context(
            [_remote_context(address, asynchronous=True, timeout=timeout) for address in addresses])
    tff.framework.set_default_context(context)


def stop_tff_workers(timeout: float = 3.0) -> list[int]:
    """Stops the `worker_binary` processes TFF's local execution started under this process.

    TFF 0.87 starts one per local execution context and never stops it; it outlives Python
    and holds the parent's stdout/stderr open, so `python -m apps.adafed --engine tff | tail`
    would never end. Apps call this when they finish. Returns the pids stopped.
    """
    import psutil

    workers = [p for p in psutil.Process().children(recursive=True) if _is_worker(p)]
    return stop_processes(workers, timeout)


def stop_processes(processes: list, timeout: float = 3.0) -> list[int]:
    """SIGTERM the `psutil.Process`es, SIGKILL those still alive after `timeout` seconds;
    returns their pids. Processes that already ended are skipped."""
    import psutil

    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    return [p.pid for p in processes]


def _is_worker(process) -> bool:
    try:
        return os.path.basename(process.exe() or process.name()) == "worker_binary"
    except Exception:  # a process that ended meanwhile, or one we may not inspect
        return False
