"""The payloads of session retention: the schedule's workflow input and its activity's."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RetentionInput(BaseModel):
    """What the retention schedule starts the workflow with (from the workers' settings)."""

    # None: no session retention (the schedule then only prunes webhook deliveries).
    idle_days: float | None = Field(default=None, gt=0)
    batch: int = Field(default=100, ge=1, le=10_000)
    max_batches: int = Field(default=100, ge=1, le=10_000)
    # Ended webhook deliveries created longer ago than this are deleted; None: kept (the
    # input of schedules made before this field, so their runs replay as they ran).
    delivery_days: float | None = Field(default=None, gt=0)
    delivery_batch: int = Field(default=1000, ge=1, le=10_000)


class DeliveryPruneInput(BaseModel):
    before: datetime
    limit: int = Field(ge=1, le=10_000)


class RetentionBatchInput(BaseModel):
    idle_before: datetime
    limit: int = Field(ge=1, le=10_000)


class RetentionResult(BaseModel):
    deleted: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    history_errors: int = 0


class RetentionSummary(BaseModel):
    """The workflow's result: counts only (a batch's ids stay in its activity's result)."""

    deleted: int = 0
    skipped: int = 0
    batches: int = 0
    deliveries_deleted: int = 0
