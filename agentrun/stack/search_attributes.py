"""agentrun's custom search attributes on a Temporal namespace: their kinds, registering them,
and refusing to start a worker on a namespace that lacks them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentrun.protocol.names import SearchAttribute
from agentrun.stack.processes import StackError

if TYPE_CHECKING:
    from temporalio.client import Client

SEARCH_ATTRIBUTES: dict[str, str] = {
    SearchAttribute.SESSION_ID.value: "Keyword",
    SearchAttribute.RUN_STATUS.value: "Keyword",
    SearchAttribute.MODEL.value: "Keyword",
    SearchAttribute.WAITING_APPROVAL.value: "Bool",
    SearchAttribute.TENANT.value: "Keyword",
}


def search_attribute_keys() -> list[Any]:
    """The typed keys of SEARCH_ATTRIBUTES, for WorkflowEnvironment.start_local and friends."""
    from temporalio.common import SearchAttributeKey

    return [
        SearchAttributeKey.for_bool(name)
        if kind == "Bool"
        else SearchAttributeKey.for_keyword(name)
        for name, kind in SEARCH_ATTRIBUTES.items()
    ]


async def ensure_search_attributes(client: Client) -> None:
    """Register agentrun's custom search attributes on a server that lacks them."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    namespace = client.namespace
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )


class MissingSearchAttributesError(StackError):
    """The namespace lacks search attributes that agentrun's runs set; the message says how to
    add them. A worker does not start without them: a run that upserts an unknown attribute
    fails its workflow task over and over while its QUEUED row holds the session."""


def search_attribute_commands(names: list[str], namespace: str) -> list[str]:
    return [
        f"temporal operator search-attribute create --name {name} "
        f"--type {SEARCH_ATTRIBUTES[name]} --namespace {namespace}"
        for name in names
    ]


async def missing_search_attributes(client: Client) -> list[str]:
    """agentrun's search attributes that the client's namespace does not have."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return [name for name in SEARCH_ATTRIBUTES if name not in existing.custom_attributes]


async def require_search_attributes(client: Client) -> None:
    """Register agentrun's search attributes where the server lets us, then make sure the
    namespace has every one; raise MissingSearchAttributesError naming those it lacks and the
    commands that add them."""
    refused: Exception | None = None
    try:
        await ensure_search_attributes(client)
    except Exception as exc:
        # Temporal Cloud and locked-down clusters refuse the operator API.
        refused = exc
    try:
        missing = await missing_search_attributes(client)
    except Exception as exc:
        if refused is None:
            raise
        # Cannot even list them: say both, rather than start a worker that may stall runs.
        missing = list(SEARCH_ATTRIBUTES)
        refused = StackError(f"{refused}; listing them failed too: {exc}")
    if not missing:
        return
    why = f" (registering them failed: {refused})" if refused is not None else ""
    commands = "\n  ".join(search_attribute_commands(missing, client.namespace))
    raise MissingSearchAttributesError(
        f"namespace {client.namespace!r} lacks agentrun's search attribute(s) "
        f"{', '.join(missing)}{why}. Runs would stall on them, so this worker does not start. "
        f"Add them, then start the worker again:\n  {commands}\n(on Temporal Cloud: "
        "tcld namespace search-attributes add, or the Cloud UI's namespace settings)"
    )
