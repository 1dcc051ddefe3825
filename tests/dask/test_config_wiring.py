"""executor.dask.address, VOLTUI_DASK_ADDRESS and `voltui serve --dask` start the Dask pool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import LocalCluster

from voltui.config import load_config
from voltui.engine.errors import UserError
from voltui.engine.models import RunState, Workflow
from voltui.engine.orchestrator import Orchestrator

REPO = Path(__file__).parents[2]


async def test_configured_address_makes_workers_agents(tmp_path: Path) -> None:
    async with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        asynchronous=True,
        dashboard_address=None,
    ) as cluster:
        config = load_config(
            None, db=tmp_path / "x.db", agents=[], dask_address=cluster.scheduler_address
        )
        assert config.executor.dask.address == cluster.scheduler_address
        async with Orchestrator(config) as orch:
            agents = orch.coordination.agents()
            assert [a.spec.kind for a in agents] == ["dask"]
            wf = Workflow.model_validate(
                {
                    "id": "on_dask",
                    "steps": [
                        {"id": "echo", "requires": ["dask"], "run": {"command": ["echo", "hi"]}}
                    ],
                }
            )
            run = await orch.run_workflow(wf)
            final = await orch.wait_run(run.id)
            assert final.state is RunState.SUCCEEDED
            detail = await orch.get_run(run.id)
            assert detail.steps[0].agent_id == agents[0].id


def test_env_variable_sets_the_address(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOLTUI_DASK_ADDRESS", "tcp://10.1.2.3:8786")
    assert load_config(None, db=tmp_path / "x.db").executor.dask.address == "tcp://10.1.2.3:8786"


async def test_unreachable_configured_address_fails_start_cleanly(tmp_path: Path) -> None:
    config = load_config(None, db=tmp_path / "x.db", dask_address="tcp://127.0.0.1:9")
    orch = Orchestrator(config)
    orch_dask_timeout = 2.0
    import voltui.engine.dask.pool as pool_module

    original = pool_module.DaskPool.__init__

    def quick(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("connect_timeout", orch_dask_timeout)
        original(self, *args, **kwargs)

    pool_module.DaskPool.__init__ = quick  # type: ignore[method-assign]
    try:
        with pytest.raises(UserError, match="dask scheduler"):
            await orch.start(watch=False)
    finally:
        pool_module.DaskPool.__init__ = original  # type: ignore[method-assign]
    assert not orch.running
    # The store was closed: a second engine opens the same file without trouble.
    async with Orchestrator(load_config(None, db=tmp_path / "x.db")) as again:
        assert again.running


def test_serve_with_unreachable_dask_is_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "VOLTUI_DB": str(tmp_path / "x.db")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voltui",
            "serve",
            "--socket",
            str(tmp_path / "s.sock"),
            "--dask",
            "tcp://127.0.0.1:9",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 2, result.stderr
    assert "dask scheduler" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s.sock").exists()
