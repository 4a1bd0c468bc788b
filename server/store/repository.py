"""The one door to the governance store for the rest of fedwarden.

Open a store once in the entry point, then work in sessions; every function
takes the session as a keyword-free first argument and everything else by
keyword, checks the acting principal's permission, and audits what it
changes or reads in the same transaction::

    from server.store import repository as repo

    store = repo.open_store(StoreSettings.load(url))
    with store.session() as session:
        alice = repo.authenticate(session, api_key)
        repo.promote_model_version(session, actor=alice, name="heart", version=3)

The functions live in small modules (``governance``, ``runs``, ``spending``, ``checkpoints``,
``registry``, ``oversight``); import them from here.
"""

from __future__ import annotations

from server.store.anchoring import (
    Receipt,
    generate_signing_key,
    load_signing_key,
    verify_receipt,
)
from server.store.artifacts import artifact_blob, has_artifact, save_artifact
from server.store.audit import ChainBreak, ChainReport
from server.store.checkpoints import checkpoint_for_export, latest_checkpoint, save_checkpoint
from server.store.drift import drift_events, latest_drift_event, record_drift_change
from server.store.engine import Store, open_store
from server.store.governance import (
    Directory,
    PrincipalSummary,
    bootstrap_admin,
    create_institution,
    create_principal,
    directory,
    grant_role,
    issue_key,
    revoke_key,
    revoke_role,
    service_principal,
)
from server.store.keys import authenticate
from server.store.migrate import current_revision, head_revision, upgrade
from server.store.models import (
    ApiKey,
    Checkpoint,
    DriftEvent,
    LedgerEntry,
    ModelRollout,
    ModelVersion,
    PerformanceEvent,
    Principal,
    Round,
    Run,
    ServedPrediction,
)
from server.store.nodes import (
    NodeKeyInfo,
    active_node_keys,
    list_node_keys,
    record_node_refusal,
    register_node_key,
    revoke_node_key,
)
from server.store.outcomes import (
    expire_predictions,
    find_predictions,
    latest_performance_event,
    performance_events,
    record_performance_change,
    record_predictions,
    set_labels,
    window_predictions,
)
from server.store.oversight import (
    export_audit_log,
    sign_audit_head,
    tail_audit_log,
    verify_audit_log,
)
from server.store.rbac import authorize, has_permission
from server.store.registry import (
    get_model_version,
    list_model_versions,
    promote_model_version,
    register_model_version,
    run_lineage,
    serving_catalog,
)
from server.store.rollouts import (
    active_rollouts,
    end_rollout,
    roll_back,
    rollout_for,
    start_rollout,
)
from server.store.runs import (
    end_run,
    get_run,
    record_profile,
    record_round,
    resume_run,
    run_profile,
    start_run,
)
from server.store.settings import StoreSettings
from server.store.spending import EpsilonTotal, epsilon_totals, ledger_entries

__all__ = [
    "ApiKey",
    "ChainBreak",
    "ChainReport",
    "Checkpoint",
    "Directory",
    "DriftEvent",
    "EpsilonTotal",
    "LedgerEntry",
    "ModelRollout",
    "ModelVersion",
    "NodeKeyInfo",
    "PerformanceEvent",
    "Principal",
    "PrincipalSummary",
    "Receipt",
    "Round",
    "Run",
    "ServedPrediction",
    "Store",
    "StoreSettings",
    "active_node_keys",
    "active_rollouts",
    "artifact_blob",
    "authenticate",
    "authorize",
    "bootstrap_admin",
    "checkpoint_for_export",
    "create_institution",
    "create_principal",
    "current_revision",
    "directory",
    "drift_events",
    "end_rollout",
    "end_run",
    "epsilon_totals",
    "expire_predictions",
    "export_audit_log",
    "find_predictions",
    "generate_signing_key",
    "get_model_version",
    "get_run",
    "grant_role",
    "has_artifact",
    "has_permission",
    "head_revision",
    "issue_key",
    "latest_checkpoint",
    "latest_drift_event",
    "latest_performance_event",
    "ledger_entries",
    "list_model_versions",
    "list_node_keys",
    "load_signing_key",
    "open_store",
    "performance_events",
    "promote_model_version",
    "record_drift_change",
    "record_node_refusal",
    "record_performance_change",
    "record_predictions",
    "record_profile",
    "record_round",
    "register_model_version",
    "register_node_key",
    "resume_run",
    "revoke_key",
    "revoke_node_key",
    "revoke_role",
    "roll_back",
    "rollout_for",
    "run_lineage",
    "run_profile",
    "save_artifact",
    "save_checkpoint",
    "service_principal",
    "serving_catalog",
    "set_labels",
    "sign_audit_head",
    "start_rollout",
    "start_run",
    "tail_audit_log",
    "upgrade",
    "verify_audit_log",
    "verify_receipt",
    "window_predictions",
]
