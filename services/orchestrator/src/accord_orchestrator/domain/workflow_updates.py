"""Workflow updates, pure: which fields a mask may name, the definition an update leads
to, and what of the state the next judgement may still compare with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from google.protobuf import field_mask_pb2

from accord.orchestrator.v1 import workflow_pb2 as wf
from accord_orchestrator.domain.workflows import State

UPDATABLE = ("display_name", "calendar", "engine", "authorization_mode", "webhooks")
KINDS = ("change_detection", "job_postings", "uptime")
# Fields of a kind that only decide how a comparison is judged, not what is compared:
# changing one of them keeps the stored snapshot (or postings) as the baseline.
JUDGING_ONLY = {"change_detection": {"threshold", "screenshot"}, "job_postings": {"max_pages"}}


def mask_problems(kind: str, paths: Sequence[str]) -> list[tuple[str, str]]:
    """(field, problem) for a mask that names nothing or what an update cannot change."""
    fields = {f.name for f in getattr(wf.Workflow(), kind).DESCRIPTOR.fields}
    bad = []
    for path in paths:
        head, _, rest = path.partition(".")
        if head in KINDS and head != kind:
            return [("update_mask", f"a workflow's kind does not change ({kind}); got {path}")]
        if not (
            (head in UPDATABLE and not rest) or (head == kind and (not rest or rest in fields))
        ):
            bad.append(path)
    if bad or not paths:
        allowed = ", ".join((*UPDATABLE, kind, f"{kind}.<field>"))
        return [
            (
                "update_mask",
                f"paths must be non-empty and among {allowed}; got {', '.join(bad) or 'none'}",
            )
        ]
    return []


def merged(
    current: wf.Workflow, update: wf.Workflow, mask: field_mask_pb2.FieldMask
) -> wf.Workflow:
    """The current definition with the masked fields of `update` in place."""
    body = wf.Workflow()
    body.CopyFrom(current)
    mask.MergeMessage(update, body, replace_message_field=True, replace_repeated_field=True)
    return body


def hook_problems(hooks: Sequence[wf.Webhook], known: set[str]) -> list[tuple[str, str]]:
    """A webhook id must be one of the workflow's, named once."""
    problems, seen = [], set()
    for i, hook in enumerate(hooks):
        if not hook.webhook_id:
            continue
        if hook.webhook_id not in known:
            problems.append((f"workflow.webhooks[{i}].webhook_id", "not one of the workflow's"))
        elif hook.webhook_id in seen:
            problems.append((f"workflow.webhooks[{i}].webhook_id", "names a webhook twice"))
        seen.add(hook.webhook_id)
    return problems


def rebaselined(before: wf.Workflow, after: wf.Workflow, state: State) -> State:
    """The state after an update: when what a check compares changed (the URL, the
    selectors, ignore patterns or fields, or the engine that renders the page), the next
    check stores a new baseline instead of reporting the edit as a change of the page."""
    kind = after.WhichOneof("kind") or ""
    old, new = wf.Workflow(), wf.Workflow()
    old.CopyFrom(before)
    new.CopyFrom(after)
    for name in JUDGING_ONLY.get(kind, ()):
        getattr(old, kind).ClearField(name)
        getattr(new, kind).ClearField(name)
    if getattr(old, kind) == getattr(new, kind) and old.engine == new.engine:
        return state
    return replace(state, snapshot=None, postings=None)
