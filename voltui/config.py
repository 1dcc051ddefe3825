"""OrchestratorConfig: every engine setting, from `voltui.toml`, `VOLTUI_*` variables and flags.

Precedence (highest first): explicit arguments (CLI flags), environment variables, the config
file, defaults. With no file and no variables the defaults give a working engine with sample
agents, which is what `voltui` on a fresh machine needs.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from voltui.engine.balancer import Strategy
from voltui.engine.cache import CacheConfig
from voltui.engine.errors import UserError
from voltui.engine.limits import WorkflowLimits
from voltui.engine.models import AgentSpec, Duration, RateLimitSpec, RetryPolicy
from voltui.engine.notify import NotifyRule
from voltui.engine.ratelimit import DEFAULT_PROVIDER, RateLimits
from voltui.engine.watcher import HealthCheckSpec, Thresholds
from voltui.locations import CONFIG_ENV, data_dir, default_config_path, default_db_path

__all__ = [
    "CONFIG_ENV",
    "DaskConfig",
    "ExecutorConfig",
    "OrchestratorConfig",
    "data_dir",
    "default_agents",
    "default_config_path",
    "load_config",
]


def default_agents() -> list[AgentSpec]:
    """The agents an engine has when the config names none: real local workers plus the
    clearly named simulated ones that demos and load tests use."""
    shell_caps = ["shell", "build", "test", "review", "deploy"]
    return [
        AgentSpec(id="shell-1", kind="command", capabilities=shell_caps, capacity=4),
        AgentSpec(id="shell-2", kind="command", capabilities=shell_caps, capacity=4),
        AgentSpec(
            id="python",
            kind="python",
            capabilities=["python", "analysis", "planning", "coding", "review"],
            capacity=4,
        ),
        AgentSpec(id="sim-1", kind="simulated", capabilities=["simulated"], capacity=8, weight=1),
        AgentSpec(id="sim-2", kind="simulated", capabilities=["simulated"], capacity=8, weight=2),
        AgentSpec(id="sim-3", kind="simulated", capabilities=["simulated"], capacity=8, weight=3),
    ]


class DaskConfig(BaseModel):
    """Where the Dask scheduler is; `local` starts a LocalCluster for trying it out."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="tcp://HOST:8786, or local")


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dask: DaskConfig = Field(default_factory=DaskConfig)


class MetricsConfig(BaseModel):
    """Prometheus `/metrics` of a long-lived engine (`voltui serve --metrics HOST:PORT`)."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="HOST:PORT to serve /metrics on")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            from voltui.engine.metrics import parse_address

            parse_address(value)
        return value


class OtelConfig(BaseModel):
    """OpenTelemetry traces (needs `pip install 'voltui[otel]'`); OTLP settings come from the
    standard OTEL_* variables."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = Field(
        None, description="None: on when OTEL_EXPORTER_OTLP_ENDPOINT is set"
    )
    service_name: str = "voltui"


class Price(BaseModel):
    """What a model costs, in USD per million tokens, as providers publish it."""

    model_config = ConfigDict(extra="forbid")
    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)


class LLMProvider(BaseModel):
    """A named OpenAI-compatible endpoint; an agent uses it with `config = {provider = NAME}`.

    The key is read from the environment variable `api_key_env` when a call is made, so it
    never sits in the config file.
    """

    model_config = ConfigDict(extra="forbid")
    base_url: str
    model: str | None = Field(None, description="default model; else llm_model")
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    timeout: Duration | None = None
    limits: RateLimitSpec | None = None


class LLMConfig(BaseModel):
    """Prices, named providers and the default endpoint's rate limits (`[llm]` in the file)."""

    model_config = ConfigDict(extra="forbid")
    prices: dict[str, Price] = Field(default_factory=dict, description="model -> price")
    providers: dict[str, LLMProvider] = Field(default_factory=dict)
    limits: RateLimitSpec | None = Field(
        None, description="rate limits of the default endpoint (llm_base_url)"
    )


class RetentionConfig(BaseModel):
    """How much history the store keeps; `voltui serve` and an open dashboard apply it every
    `interval`, `voltui prune` on demand. Active runs are never pruned."""

    model_config = ConfigDict(extra="forbid")
    keep_runs: int | None = Field(
        1000, ge=1, description="finished runs kept (newest first); null = no count limit"
    )
    max_age: Duration | None = Field(
        30 * 86400.0, description="finished runs older than this go (e.g. 30d); null = keep"
    )
    interval: Duration = Field(3600.0, gt=0, description="how often a server applies it")
    delete_run_folders: bool = Field(
        True, description="also delete the run folders (artefacts) of pruned runs"
    )


class OrchestratorConfig(BaseSettings):
    """The design's OrchestratorConfig in Python form (durations accept `30s`, `5m`)."""

    model_config = SettingsConfigDict(
        env_prefix="VOLTUI_", extra="forbid", env_nested_delimiter="__", validate_default=True
    )

    db: Path | None = Field(None, description="SQLite file; default under the user data folder")
    workflows_dir: Path | None = Field(None, description="folder of workflow files to offer")
    health_check_interval: Duration = 30.0
    metrics_collection_interval: Duration = 5.0
    workflow_timeout: Duration | None = 3600.0
    max_concurrent_workflows: int = Field(10, ge=1)
    load_balancing_strategy: Strategy = "least_connections"
    cache: CacheConfig = Field(default_factory=CacheConfig)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    cancel_grace: Duration = 5.0
    enable_telemetry: bool = Field(
        False, description="also persist metrics:system samples in the event log"
    )
    log_level: Literal["debug", "info", "warn", "error"] = Field(
        "info", description="what voltui logs to stderr (voltui serve and the one-shot commands)"
    )
    event_history: int = Field(10_000, ge=100, description="events kept in memory")
    max_stored_events: int = Field(1_000_000, ge=1000, description="events kept in SQLite")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    tune_gc: bool = Field(
        True, description="raise the garbage collector's thresholds for big runs (process-wide)"
    )
    max_log_lines: int = Field(
        10_000, ge=10, description="log lines per step attempt kept in the store; the rest spill"
    )
    live_output_lines: int = Field(
        200, ge=1, description="step:output events per second per attempt; the rest log only"
    )
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout: Duration = 120.0
    llm: LLMConfig = Field(default_factory=LLMConfig)
    max_map_children: int = Field(
        1000, ge=1, le=1_000_000, description="most children one `map:` step may start"
    )
    agents: list[AgentSpec] | None = Field(None, description="None means the default agents")
    watch: list[HealthCheckSpec] = Field(default_factory=list)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    keymap: dict[str, str] = Field(default_factory=dict, description="binding id -> keys")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    limits: WorkflowLimits = Field(
        default_factory=WorkflowLimits,
        description="bounds on workflow files: size, steps, text length, nesting",
    )
    # Automation (schedules, triggers, notifications, metrics, traces): see engine/automation.py.
    schedules_enabled: bool = Field(
        True, description="run workflow schedules in `voltui serve` and the dashboard"
    )
    triggers_enabled: bool = Field(
        True, description="watch workflow file triggers in `voltui serve` and the dashboard"
    )
    notify: list[NotifyRule] = Field(default_factory=list)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    otel: OtelConfig = Field(default_factory=OtelConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def db_path(self) -> Path:
        return self.db or default_db_path()

    def runs_dir(self) -> Path:
        return self.db_path().parent / "runs"

    def agent_specs(self) -> list[AgentSpec]:
        return list(self.agents) if self.agents is not None else default_agents()

    def agent_settings(self) -> dict[str, Any]:
        """What agents see as `ctx.settings` (LLM endpoint and friends)."""
        return {
            "llm_base_url": self.llm_base_url,
            "llm_api_key": self.llm_api_key,
            "llm_model": self.llm_model,
            "llm_timeout": self.llm_timeout,
            "llm_prices": {name: p.model_dump() for name, p in self.llm.prices.items()},
            "llm_providers": {
                name: p.model_dump(exclude={"limits"}) for name, p in self.llm.providers.items()
            },
        }

    def rate_limits(self) -> RateLimits:
        """The limits of every configured agent and provider, as one engine-wide registry."""
        providers: dict[str, RateLimitSpec | None] = {
            name: p.limits for name, p in self.llm.providers.items()
        }
        providers.setdefault(DEFAULT_PROVIDER, self.llm.limits)
        agents = {spec.id: spec.limits for spec in self.agent_specs() if spec.limits}
        return RateLimits(agents, providers)


_CONFIG_FILE: dict[str, Path | None] = {}


def load_config(path: Path | None = None, **overrides: Any) -> OrchestratorConfig:
    """Read the config (file + env + overrides) or raise a UserError naming the file and key."""
    path = path or default_config_path()
    if path is not None and not path.is_file():
        raise UserError(f"{path}: config file not found; create it or unset {CONFIG_ENV}")
    if path is not None:
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid TOML: {exc}") from None
    _CONFIG_FILE["path"] = path
    dask_address = overrides.pop("dask_address", None) or os.environ.get("VOLTUI_DASK_ADDRESS")
    if dask_address:  # the short spelling of VOLTUI_EXECUTOR__DASK__ADDRESS
        overrides["executor"] = {"dask": {"address": dask_address}}
    metrics_address = overrides.pop("metrics_address", None)
    if metrics_address:  # `voltui serve --metrics HOST:PORT`
        overrides["metrics"] = {"address": metrics_address}
    try:
        return OrchestratorConfig(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        where = str(path) if path else "configuration (VOLTUI_* variables)"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise UserError(f"{where}: {problems}") from None
    finally:
        _CONFIG_FILE.pop("path", None)
