"""Approvals in the dashboard, driven by Pilot against a real engine: the banner, `a`/`x`
with a comment and a confirmation, and refusal in --read-only."""

from __future__ import annotations

import asyncio

from textual.widgets import Input

from tests.tui.test_app import SIZE, until
from voltui.engine.models import RunState, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.app import VoltApp
from voltui.tui.screens import DecisionScreen
from voltui.tui.widgets import ApprovalBanner, RunsTable
from voltui.tui.widgets.dag import render_dag

GATED = Workflow.model_validate(
    {
        "id": "gated",
        "steps": [
            {"id": "build", "run": {"simulated": {"duration": "1ms"}}},
            {
                "id": "gate",
                "depends_on": ["build"],
                "run": {"approval": {"prompt": "Deploy \x1b[31mbuild 7\x1b[0m?"}},
            },
        ],
    }
)


def banner_text(app: VoltApp) -> str:
    return str(app.query_one(ApprovalBanner).render())


async def test_banner_and_approve_with_a_comment(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert not app.query_one(ApprovalBanner).display
        assert app.check_action("decide", (True,)) is False  # nothing waits: hidden
        run = await engine.run_workflow(GATED)
        await until(pilot, lambda: app.query_one(ApprovalBanner).display)
        text = banner_text(app)
        assert f"run {run.id[:12]} step gate awaits approval: Deploy build 7?" in text
        assert "a approve · x reject" in text and "\x1b" not in text
        assert app.check_action("decide", (True,)) is True
        assert app.state is not None
        view = app.state.runs[run.id]
        await until(pilot, lambda: "gate" in view.steps)
        dag = render_dag(view, 200).plain
        assert "awaiting approval: Deploy build 7?" in dag and "\x1b" not in dag
        # Nothing else at work: the run itself waits, and the runs table says for what.
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: "waiting (approval)" in runs.get_cell(run.id, "state").plain)

        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, DecisionScreen))
        await pilot.press(*"ship it")
        assert app.screen.query_one(Input).value == "ship it"
        await pilot.press("enter")
        await until(pilot, lambda: not app.query_one(ApprovalBanner).display)
        final = await asyncio.wait_for(engine.wait_run(run.id), 10)
    assert final.state is RunState.SUCCEEDED
    out = (await engine.get_run(run.id)).steps[1].output
    assert (out["decision"], out["via"], out["comment"]) == ("approved", "dashboard", "ship it")


async def test_reject_needs_the_confirmation(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        run = await engine.run_workflow(GATED)
        await until(pilot, lambda: app.query_one(ApprovalBanner).display)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, DecisionScreen))
        await pilot.press("escape")  # backing out decides nothing
        await until(pilot, lambda: not isinstance(app.screen, DecisionScreen))
        await pilot.pause(0.3)
        assert app.query_one(ApprovalBanner).display
        assert (await engine.get_run(run.id)).steps[1].state.value == "waiting"
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, DecisionScreen))
        await pilot.press("enter")
        final = await asyncio.wait_for(engine.wait_run(run.id), 10)
    assert final.state is RunState.FAILED
    assert (await engine.get_run(run.id)).steps[1].error == "rejected by " + (
        (await engine.get_run(run.id)).steps[1].output["by"]
    ) + " via dashboard"


async def test_read_only_refuses_decisions(engine: Orchestrator) -> None:
    app = VoltApp(engine, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        run = await engine.run_workflow(GATED)
        await until(pilot, lambda: app.query_one(ApprovalBanner).display)
        assert "read-only: decide elsewhere" in banner_text(app)
        assert app.check_action("decide", (True,)) is None  # greyed, and refused
        await pilot.press("a")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, DecisionScreen)
        assert any("read-only" in n.message for n in app._notifications)
        assert (await engine.get_run(run.id)).steps[1].state.value == "waiting"
        await engine.cancel_run(run.id)
        await until(pilot, lambda: not app.query_one(ApprovalBanner).display)


async def test_header_shows_llm_tokens_and_cost_once_there_are_some(engine: Orchestrator) -> None:
    from voltui.engine.models import Event
    from voltui.tui.widgets import HeaderBar

    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.state is not None
        header = app.query_one(HeaderBar)
        assert "llm" not in header.render_state(app.state).plain
        usage = {"step": "a", "model": "m", "prompt_tokens": 1200, "completion_tokens": 34}
        usage |= {"cost_usd": 0.0123, "priced": True}
        app.state.apply(
            [Event(seq=app.state.seq + 1, ts=0, type="step:usage", source="t", data=usage)]
        )
        assert "llm 1,234 tok $0.0123" in header.render_state(app.state).plain
