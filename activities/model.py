"""The model-turn activity: stream one turn from an OpenAI-compatible endpoint into the event
log, then record it.

The openai client's own retries are off (max_retries=0): Temporal retries the activity, so
every attempt is visible, recorded in llm_calls, and retried after what Retry-After asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any, TypeVar

import openai
import sqlalchemy.exc
from openai import AsyncOpenAI
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.compaction import Compactor, with_summary_usage
from activities.context import load_context
from activities.heartbeats import Beat, beating, db_only_attempts
from activities.model_errors import DatabaseUnavailableError, db_error_text, is_transient_db_error
from activities.model_record import TurnRecording, turn_result
from activities.sessions import keep_interrupted
from activities.streaming import DeltaWriter, StreamedTurn, read_stream
from activities.tool_schemas import tool_schemas
from activities.tools import ToolRegistry
from agentrun.contracts import (
    AgentConfig,
    ModelTurnInput,
    ModelTurnResult,
)
from agentrun.pricing import Pricing
from agentrun.protocol.events import EventType, MessageDeltaData, StreamResetData
from agentrun.protocol.names import Activity
from agentrun.protocol.statuses import LlmCallStatus
from agentrun.settings import Settings
from agentrun.store import Repository, event_key
from agentrun.telemetry.genai import ModelCall, model_call

CONFIG_CACHE_RUNS = 1024
T = TypeVar("T")
# Kept importable from here: older callers and tests name them through this module.
_db_error_text = db_error_text
__all__ = ["ModelActivities", "is_transient_db_error"]


class ModelActivities(TurnRecording):
    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        registry: ToolRegistry,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.registry = registry
        self._client = client
        self.pricing = Pricing(settings.prices)
        self._configs: OrderedDict[str, AgentConfig] = OrderedDict()

    def client(self) -> AsyncOpenAI:
        if self._client is None:
            key = self.settings.openai_api_key
            self._client = AsyncOpenAI(
                base_url=self.settings.openai_base_url,
                api_key=key.get_secret_value() if key else "offline",
                max_retries=0,
            )
        return self._client

    async def _config(self, inp: ModelTurnInput) -> AgentConfig:
        # Activity tasks scheduled before the config moved to the run row still carry it.
        if inp.config is not None:
            return inp.config
        cached = self._configs.get(inp.run_id)
        if cached is not None:
            self._configs.move_to_end(inp.run_id)
            return cached
        run = await self._db("read the run's config", lambda: self.repo.get_run(inp.run_id))
        # Tolerant: a field this worker does not know (written by a newer one) is left out.
        known = {k: v for k, v in (run.config or {}).items() if k in AgentConfig.model_fields}
        config = AgentConfig.model_validate(known)
        self._configs[inp.run_id] = config
        while len(self._configs) > CONFIG_CACHE_RUNS:
            self._configs.popitem(last=False)
        return config

    @activity.defn(name=Activity.MODEL_TURN)
    async def model_turn(self, inp: ModelTurnInput) -> ModelTurnResult:
        # Heartbeat details carry, from attempt to attempt, the attempts that failed on the
        # database before they called the model: the database cannot record them itself.
        beat = Beat(db_only=db_only_attempts(activity.info().heartbeat_details))
        try:
            async with beating(beat):
                return await self._model_turn(inp, beat)
        except DatabaseUnavailableError as exc:
            if not beat.model_called:
                beat.db_only.append(activity.info().attempt)
                beat.send()
            # Retryable; when the model was not called it spends none of the model budget.
            raise ApplicationError(str(exc), type="DatabaseUnavailable") from None
        except sqlalchemy.exc.DBAPIError as exc:
            # Lost connections were waited out above; what is left is a value or a statement
            # the database refuses, which no retry changes. The driver's message only: the
            # statement's parameters (conversation text) stay out of Temporal and the logs.
            raise ApplicationError(
                f"the database refused a write of model turn {inp.turn}: {db_error_text(exc)}",
                type="DatabaseRefused",
                non_retryable=True,
            ) from None

    async def _model_turn(self, inp: ModelTurnInput, beat: Beat) -> ModelTurnResult:
        info = activity.info()
        attempt = info.attempt
        recorded = await self._db(
            "look up the turn", lambda: self.repo.find_turn(inp.run_id, inp.turn)
        )
        config = await self._config(inp)
        if recorded is not None:
            message, call = recorded
            used = await self._db(
                "read the turn's usage", lambda: self.repo.turn_usage(inp.run_id, inp.turn)
            )
            return await self._with_summary(
                inp,
                config,
                turn_result(
                    inp.turn, message.content or "", message.tool_calls or [], call, True, used
                ),
            )
        await self._db(
            "mark lost attempts",
            lambda: self.repo.mark_lost_attempts(
                inp.run_id, inp.turn, attempt, inp.model, not_lost=beat.db_only
            ),
        )
        # The model budget is counted in the database: attempts that failed on the database
        # before they reached the model do not spend it.
        spent = await self._db(
            "count model attempts", lambda: self.repo.model_attempts(inp.run_id, inp.turn)
        )
        if len(spent) >= config.model_max_attempts:
            last = spent[-1].error or spent[-1].status
            raise ApplicationError(
                f"model turn {inp.turn} gave up after {len(spent)} attempts; the last: {last}",
                type="ModelAttemptsExhausted",
                non_retryable=True,
            )
        if attempt > 1:
            await self._db(
                "write stream.reset",
                lambda: self.repo.append_event(
                    inp.run_id,
                    StreamResetData(turn=inp.turn, attempt=attempt),
                    key=event_key(EventType.STREAM_RESET, inp.turn, attempt),
                ),
            )
        summary = None
        if config.context_strategy == "summarize":
            compactor = Compactor(self.repo, self.client, self._db, self.pricing)
            summary = await compactor.summary_for(inp, config, attempt)
        messages = await self._db(
            "read the context",
            lambda: load_context(
                self.repo,
                config.system_prompt,
                inp.session_id,
                inp.run_id,
                config.context_token_budget,
                summary,
            ),
        )
        mcp = await self._mcp_schemas(inp.run_id) if config.mcp_servers else None
        tools = tool_schemas(self.registry, inp.tools, config, mcp)
        beat.model_called = True
        with model_call(inp.model, self.settings.model_endpoint, messages, attempt) as seen:
            result = await self._stream_turn(
                inp, config, attempt, len(spent), messages, tools, seen
            )
            seen.cost_usd = result.usage.cost_usd
        return await self._with_summary(inp, config, result)

    async def _with_summary(
        self, inp: ModelTurnInput, config: AgentConfig, result: ModelTurnResult
    ) -> ModelTurnResult:
        if config.context_strategy != "summarize":
            return result
        return await self._db(
            "read the summary's usage",
            lambda: with_summary_usage(self.repo, inp.run_id, inp.turn, result),
        )

    async def _mcp_schemas(self, run_id: str) -> dict[str, dict[str, Any]]:
        # Imported here: the mcp client is loaded by workers that run MCP tools only.
        from activities.mcp_tools import mcp_schemas

        return await self._db("read the run's MCP tools", lambda: mcp_schemas(self.repo, run_id))

    async def _stream_turn(
        self,
        inp: ModelTurnInput,
        config: AgentConfig,
        attempt: int,
        spent: int,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        call: ModelCall | None = None,
    ) -> ModelTurnResult:
        async def write_delta(text: str) -> None:
            await self._db(
                "write a delta",
                lambda: self.repo.append_stream_event(
                    inp.run_id, MessageDeltaData(turn=inp.turn, attempt=attempt, text=text)
                ),
            )

        writer = DeltaWriter(write_delta, config.flush_interval_ms / 1000)
        turn = StreamedTurn()
        if call is not None:
            call.watch(turn, writer)
        stream: Any = None
        try:
            stream = await self._open_stream(inp, config, messages, tools)
            await read_stream(
                stream,
                turn,
                writer,
                first_wait=config.first_token_timeout_s,
                stall=config.model_heartbeat_timeout_s,
            )
            await writer.close()
        except asyncio.CancelledError:
            # Cancelled (the run was cancelled, or the worker is shutting down): keep what
            # streamed so far in the event log, then let the cancellation through.
            with contextlib.suppress(Exception):
                await asyncio.shield(writer.close())
            if not activity.is_worker_shutdown():
                # The run's cancel: the attempt happened and is counted in the record (a
                # shutdown's attempt is recorded as lost by the next one instead).
                with contextlib.suppress(Exception):
                    why = "the run was cancelled while the model streamed"
                    await asyncio.shield(
                        self._record_attempt(
                            inp, attempt, turn, LlmCallStatus.CANCELED, why, time.monotonic()
                        )
                    )
                with contextlib.suppress(Exception):
                    await asyncio.shield(keep_interrupted(self.repo, inp, turn.text))
            raise
        except DatabaseUnavailableError:
            with contextlib.suppress(Exception):
                await writer.close()
            raise
        except Exception as exc:
            # Whatever streamed before the failure stays in the event log.
            with contextlib.suppress(Exception):
                await writer.close()
            raise await self._failed(inp, attempt, spent + 1, config, turn, exc) from exc
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.close())
        return await self._record_turn(inp, attempt, turn, bool(tools), writer.commits)

    async def _open_stream(
        self,
        inp: ModelTurnInput,
        config: AgentConfig,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = tools
        if config.temperature is not None:
            kwargs["temperature"] = config.temperature
        if config.max_output_tokens is not None:
            kwargs["max_tokens"] = config.max_output_tokens
        first_wait = config.first_token_timeout_s
        # The SDK's overloads cannot see through **kwargs; the call is the documented one.
        create: Any = self.client().chat.completions.create
        # Waits are timed by read_stream, not by the HTTP client (see there); the HTTP read
        # timeout is only a backstop behind both.
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
        # lands as the awaited call completes, and a cancelled run's stream would run on.
        async with asyncio.timeout(first_wait):
            return await create(
                model=inp.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                timeout=openai.Timeout(
                    config.model_timeout_s,
                    read=max(first_wait, config.model_heartbeat_timeout_s) + 5,
                    connect=10,
                ),
                **kwargs,
            )
