"""Step execution on a Dask cluster: each Dask worker is an engine agent (the `voltui[dask]` extra).

`DaskPool(orchestrator, address)` connects to a scheduler (or starts a LocalCluster for `local`)
and keeps one `DaskWorkerAgent` registered per worker. Nothing here imports `distributed` at
module level, so the engine imports fine without the extra; `DaskPool.start()` says what to
install when it is missing.
"""

from voltui.engine.dask.agent import DaskWorkerAgent, agent_id_for
from voltui.engine.dask.pool import DaskPool

__all__ = ["DaskPool", "DaskWorkerAgent", "agent_id_for"]
