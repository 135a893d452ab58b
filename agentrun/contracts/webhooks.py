"""The agentrun.WebhookDelivery workflow's input and its activities' arguments. The delivery's
content (URL, body, secret) stays in PostgreSQL: history holds the delivery id only."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WebhookDeliveryInput(BaseModel):
    """One delivery to make; the retry schedule is the dispatcher's (its defaults: 1 s, then
    twice as long each time up to 5 minutes, 20 attempts, about an hour in all)."""

    delivery_id: str
    initial_interval_s: float = Field(default=1.0, gt=0)
    backoff: float = Field(default=2.0, ge=1)
    max_interval_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=20, ge=1)
    # One attempt: the receiver's answer must come within this.
    request_timeout_s: float = Field(default=10.0, gt=0)


class DeliverWebhookInput(BaseModel):
    delivery_id: str
    request_timeout_s: float = 10.0


class WebhookFailureInput(BaseModel):
    delivery_id: str
    reason: str
