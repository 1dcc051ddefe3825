"""Steps on a real Dask LocalCluster (two worker processes), driven through the real Orchestrator.

One cluster serves the module; each test gets its own engine (SQLite file in tmp_path) with only
the Dask workers as agents. Step code lives in a uniquely named module in the test's workflow
folder, because worker processes outlive tests and keep imported modules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from distributed import LocalCluster, Scheduler, Worker

from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.dask import DaskPool, DaskWorkerAgent, agent_id_for
from voltui.engine.errors import UserError
from voltui.engine.models import Event, HealthStatus, RunState, StepState
from voltui.engine.orchestrator import Orchestrator

GRACE = 3.0
RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes (2 threads each); their nannies restart a killed worker."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture
async def engine(tmp_path: Path, cluster: LocalCluster) -> AsyncIterator[Orchestrator]:
    await asyncio.to_thread(cluster.wait_for_workers, 2, 60)
    config = OrchestratorConfig(db=tmp_path / "x.db", agents=[], cancel_grace=GRACE)
    orch = Orchestrator(config)
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


@pytest.fixture
async def pool(engine: Orchestrator, cluster: LocalCluster) -> AsyncIterator[DaskPool]:
    pool = DaskPool(engine, cluster.scheduler_address, poll_interval=0.5, connect_timeout=5)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()


def write_workflow(folder: Path, module: str, code: str, steps: str, extra: str = "") -> Path:
    (folder / f"{module}.py").write_text(code)
    path = folder / "wf.yaml"
    path.write_text(f"id: wf\nmax_parallel: 8\n{extra}steps:\n{steps}")
    return path


def history(orch: Orchestrator, type_: str) -> list[Event]:
    return [e for e in orch.dispatcher.history() if e.type == type_]


async def until(condition: Any, *, limit: float = 30.0, what: str = "condition") -> Any:
    """Poll a cheap condition; only for state that has no event to wait on."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def worker_addresses(pool: DaskPool) -> set[str]:
    info = await pool.client.scheduler.identity(n_workers=-1)
    return set(info["workers"])


async def run(orch: Orchestrator, path: Path) -> str:
    started = await orch.start_workflow(StartRequest(workflow=str(path)))
    return started.id


# --------------------------------------------------------------------------- tests


def test_agent_from_worker_description() -> None:
    """Capabilities from worker resources, capacity from threads, a readable id."""

    class FakePool:
        scheduler_address = "tcp://10.0.0.1:8786"
        connected = True

    info = {
        "nthreads": 8,
        "resources": {"GPU": 2, "review": 1},
        "name": "gpu-box",
        "host": "10.0.0.5",
        "status": "running",
    }
    agent = DaskWorkerAgent.from_worker(
        FakePool(),  # type: ignore[arg-type]
        "tcp://10.0.0.5:40123",
        info,
        capabilities=("big", "dask"),
    )
    assert agent.id == "dask-10.0.0.5-40123"
    assert agent.spec.kind == "dask"
    assert agent.spec.capacity == 8
    assert agent.spec.capabilities == ["dask", "python", "shell", "GPU", "review", "big"]
    assert agent.spec.config["scheduler"] == "tcp://10.0.0.1:8786"
    assert agent.ready
    agent.worker_status = "paused"
    assert not agent.ready
    assert agent_id_for("tcp://[::1]:5000") == "dask-__1-5000"
    assert agent_id_for("inproc://10.0.0.1/123/4") == "dask-10.0.0.1-123-4"


async def test_workers_become_agents_with_capacity_and_capabilities(
    engine: Orchestrator, pool: DaskPool, cluster: LocalCluster
) -> None:
    addresses = await worker_addresses(pool)
    assert {a.address for a in pool.agents} == addresses
    loads = {load.id: load for load in engine.coordination.loads()}
    for address in addresses:
        load = loads[agent_id_for(address)]
        assert load.kind == "dask"
        assert load.capacity == 2  # threads_per_worker
        assert {"dask", "python", "shell"} <= set(load.capabilities)
    (status,) = await engine.watcher.check_now("dask")
    assert status.status is HealthStatus.HEALTHY
    assert "2 workers, 4 threads" in status.message


async def test_fan_out_runs_across_both_workers(
    engine: Orchestrator, pool: DaskPool, tmp_path: Path, cluster: LocalCluster
) -> None:
    code = (
        "import os, time\n"
        "from distributed import get_worker\n"
        "def where(ctx):\n"
        "    ctx.log(f'hello from pid {os.getpid()}')\n"
        "    time.sleep(1.0)\n"
        "    return {'worker': get_worker().address, 'step': ctx.step.id}\n"
    )
    mod = f"fan_{tmp_path.name}"
    steps = "".join(
        f"  - {{id: s{i}, requires: [dask], run: {{python: '{mod}:where'}}}}\n" for i in range(4)
    )
    path = write_workflow(tmp_path, mod, code, steps)
    run_id = await run(engine, path)
    done = await asyncio.wait_for(engine.wait_run(run_id), RUN_TIMEOUT)
    assert done.state is RunState.SUCCEEDED, done.error

    detail = await engine.get_run(run_id)
    used = {s.output["worker"] for s in detail.steps}
    assert used == await worker_addresses(pool)  # both workers ran steps
    assert all(s.agent_id == agent_id_for(s.output["worker"]) for s in detail.steps)
    busy = {e.data["id"] for e in history(engine, "agent:load") if e.data["active"] > 0}
    assert busy == {a.id for a in pool.agents}  # the load table showed both busy
    log = await engine.step_log(run_id, "s0")
    assert any(line.line.startswith("hello from pid") for line in log)


async def test_command_step_runs_on_a_worker_with_output_streamed(
    engine: Orchestrator, pool: DaskPool, tmp_path: Path
) -> None:
    script = (
        "import json, os, sys; d = json.load(sys.stdin); "
        "print('parent', os.getppid(), flush=True); print('careful', file=sys.stderr); "
        "print(json.dumps({'n': d['params']['n'] * 2}))"
    )
    steps = (
        "  - id: cmd\n    requires: [dask]\n    params: {n: 21}\n"
        f"    run: {{command: [python, -c, {script!r}]}}\n"
    )
    path = write_workflow(tmp_path, f"unused_{tmp_path.name}", "", steps)
    run_id = await run(engine, path)
    done = await asyncio.wait_for(engine.wait_run(run_id), RUN_TIMEOUT)
    assert done.state is RunState.SUCCEEDED, done.error
    detail = await engine.get_run(run_id)
    assert detail.steps[0].output == {"n": 42}
    log = await engine.step_log(run_id, "cmd")
    parent = int(next(line.line for line in log if line.line.startswith("parent")).split()[1])
    worker_pids = set((await pool.client.run(os.getpid)).values())
    assert parent in worker_pids  # the child process was started by a worker, not the engine
    assert parent != os.getpid()
    assert ("stderr", "careful") in [(line.stream, line.line) for line in log]


async def test_failures_on_a_worker_keep_their_message_and_retryability(
    engine: Orchestrator, pool: DaskPool, tmp_path: Path
) -> None:
    mod = f"fails_{tmp_path.name}"
    code = "def boom(ctx):\n    raise ValueError('bad value ' + str(ctx.attempt))\n"
    steps = (
        f"  - {{id: boom, requires: [dask], run: {{python: '{mod}:boom'}}}}\n"
        f"  - {{id: missing, requires: [dask], run: {{python: 'no_such_mod_{tmp_path.name}:f'}}}}\n"
    )
    extra = "retry: {max_attempts: 2, base_delay: 10ms}\n"
    path = write_workflow(tmp_path, mod, code, steps, extra)
    run_id = await run(engine, path)
    done = await asyncio.wait_for(engine.wait_run(run_id), RUN_TIMEOUT)
    assert done.state is RunState.FAILED
    steps_by_id = {s.step_id: s for s in (await engine.get_run(run_id)).steps}
    assert steps_by_id["boom"].error == "ValueError: bad value 2"  # retried once, as policy says
    assert steps_by_id["missing"].attempt == 1  # an import error is not retried
    assert "on Dask worker tcp://" in (steps_by_id["missing"].error or "")
    log = await engine.step_log(run_id, "boom", attempt=2)
    assert any(f"{mod}.py" in line.line for line in log if line.stream == "stderr")


async def test_cancel_stops_a_running_command_on_a_worker(
    engine: Orchestrator, pool: DaskPool, tmp_path: Path
) -> None:
    steps = (
        "  - id: sleeper\n    requires: [dask]\n"
        "    run: {command: 'echo $$; exec sleep 60', shell: true}\n"
    )
    path = write_workflow(tmp_path, f"unused_{tmp_path.name}", "", steps)
    run_id = await run(engine, path)

    async def pid_line() -> int | None:
        lines = await engine.step_log(run_id, "sleeper")
        return int(lines[0].line) if lines else None

    pid = None
    deadline = time.monotonic() + 30
    while pid is None and time.monotonic() < deadline:
        pid = await pid_line()
        await asyncio.sleep(0.05)
    assert pid is not None, "the command never printed its pid"
    assert psutil.Process(pid).name() == "sleep"

    began = time.monotonic()
    cancelled = await engine.cancel_run(run_id)
    took = time.monotonic() - began
    assert cancelled.state is RunState.CANCELLED
    assert took < GRACE + 5
    gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert gone, "the subprocess on the worker is still running"
    lines = [line.line for line in await engine.step_log(run_id, "sleeper")]
    assert any(line.startswith("stopped on Dask worker") for line in lines)
    step = (await engine.get_run(run_id)).steps[0]
    assert step.state is StepState.CANCELLED


async def test_cancel_reaches_a_python_step_through_its_cancel_event(
    engine: Orchestrator, pool: DaskPool, tmp_path: Path
) -> None:
    mod = f"coop_{tmp_path.name}"
    code = (
        "def loop(ctx):\n"
        "    (ctx.run_dir / 'looping').write_text('1')\n"
        "    while not ctx.cancel_event.wait(0.05):\n"
        "        pass\n"
        "    ctx.log('saw the cancel')\n"
    )
    steps = f"  - {{id: loop, requires: [dask], run: {{python: '{mod}:loop'}}}}\n"
    path = write_workflow(tmp_path, mod, code, steps)
    run_id = await run(engine, path)
    run_dir = Path((await engine.get_run(run_id)).run.run_dir or "")
    await until((run_dir / "looping").exists, what="the step to start")
    cancelled = await engine.cancel_run(run_id)
    assert cancelled.state is RunState.CANCELLED
    lines = [line.line for line in await engine.step_log(run_id, "loop")]
    assert "saw the cancel" in lines  # the worker-side step really observed it
    assert any(line.startswith("stopped on Dask worker") for line in lines)


async def test_killed_worker_step_is_retried_elsewhere(
    engine: Orchestrator, pool: DaskPool, tmp_path: Path, cluster: LocalCluster
) -> None:
    mod = f"victim_{tmp_path.name}"
    code = (
        "import os, time\n"
        "from distributed import get_worker\n"
        "def victim(ctx):\n"
        "    if ctx.attempt == 1:\n"
        "        (ctx.run_dir / 'victim.pid').write_text(str(os.getpid()))\n"
        "        for _ in range(600):\n"
        "            time.sleep(0.1)\n"
        "    return {'worker': get_worker().address, 'attempt': ctx.attempt}\n"
    )
    steps = f"  - {{id: victim, requires: [dask], run: {{python: '{mod}:victim'}}}}\n"
    extra = "retry: {max_attempts: 3, base_delay: 100ms}\n"
    path = write_workflow(tmp_path, mod, code, steps, extra)
    run_id = await run(engine, path)
    run_dir = Path((await engine.get_run(run_id)).run.run_dir or "")
    pid_file = run_dir / "victim.pid"
    await until(pid_file.exists, what="the step to start on a worker")
    started = history(engine, "step:started")
    first_agent = started[-1].data["agent"]
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    done = await asyncio.wait_for(engine.wait_run(run_id), RUN_TIMEOUT)
    assert done.state is RunState.SUCCEEDED, done.error
    step = (await engine.get_run(run_id)).steps[0]
    assert step.attempt == 2
    assert step.agent_id != first_agent
    assert first_agent in {e.data["agent"] for e in history(engine, "agent:unregistered")}
    retry = history(engine, "step:retrying")[0]
    assert "left the cluster" in retry.data["error"]
    # The nanny restarts the worker under a new address: it joins as a new agent.
    await until(lambda: len(pool.agents) == 2, limit=60, what="the restarted worker")
    assert first_agent not in {a.id for a in pool.agents}
    assert all(isinstance(a, DaskWorkerAgent) for a in pool.agents)


async def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    config = OrchestratorConfig(db=tmp_path / "x.db", agents=[])
    async with Orchestrator(config) as orch:
        pool = DaskPool(orch, f"tcp://127.0.0.1:{port}", connect_timeout=2)
        began = time.monotonic()
        with pytest.raises(UserError) as info:
            await pool.start()
        assert time.monotonic() - began < 15
        message = str(info.value)
        assert f"tcp://127.0.0.1:{port}" in message
        assert "`dask scheduler`" in message and "`dask worker" in message
        assert pool.agents == []
        assert "dask" not in {c.id for c in orch.watcher.components()}
        await pool.stop()  # harmless after a failed start


async def test_scheduler_lost_mid_run_fails_the_step_and_the_component(tmp_path: Path) -> None:
    """An in-process scheduler and worker; the scheduler stops while a step runs."""
    scheduler = await Scheduler(port=0, dashboard_address=":0")
    worker = await Worker(scheduler.address, nthreads=1)
    config = OrchestratorConfig(db=tmp_path / "x.db", agents=[])
    orch = Orchestrator(config)
    await orch.start(watch=False)
    # cancel_poll: no worker-side client in this process, whose teardown would be noisy.
    pool = DaskPool(orch, scheduler.address, poll_interval=0.2, connect_timeout=2, cancel_poll=60)
    await pool.start()
    try:
        mod = f"lost_{tmp_path.name}"
        code = (
            "import time\n"
            "def wait(ctx):\n"
            "    (ctx.run_dir / 'started').write_text('1')\n"
            "    for _ in range(30):\n"
            "        time.sleep(0.1)\n"
        )
        steps = f"  - {{id: wait, requires: [dask], run: {{python: '{mod}:wait'}}}}\n"
        path = write_workflow(tmp_path, mod, code, steps)
        run_id = await run(orch, path)
        run_dir = Path((await orch.get_run(run_id)).run.run_dir or "")
        await until((run_dir / "started").exists, what="the step to start")
        await scheduler.close()

        done = await asyncio.wait_for(orch.wait_run(run_id), RUN_TIMEOUT)
        assert done.state is RunState.FAILED
        step = (await orch.get_run(run_id)).steps[0]
        assert "lost the connection to the Dask scheduler" in (step.error or "")
        # Once Dask's client gives up reconnecting, the workers stop being agents.
        await until(lambda: not pool.agents, limit=30, what="agents to be unregistered")
        assert not [a for a in orch.coordination.agents() if a.spec.kind == "dask"]
        changes = [e for e in history(orch, "health:changed") if e.data["component"] == "dask"]
        assert changes and changes[-1].data["status"] == HealthStatus.UNHEALTHY.value
        (status,) = [c for c in orch.watcher.components() if c.id == "dask"]
        assert "unreachable" in status.message
    finally:
        await orch.stop()
        await pool.stop()
        await worker.close(timeout=5)
