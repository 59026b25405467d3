"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json``, one per role (the archive's
routes, or the agent's), written out here so that it is reviewed with the routes it
describes."""

from __future__ import annotations

from typing import Any

from stgcmt import __version__
from stgcmt.storage.queries import SCU_TX_STATES, STATE_WORDS


def _param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


TIME = {"oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}
PAGE = [
    _param("limit", "page size (1-500, default 50)", {"type": "integer", "minimum": 1}),
    _param("offset", "rows to skip (default 0)", {"type": "integer", "minimum": 0}),
]
ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
ERROR = {
    "description": "JSON error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error", "detail"],
                "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
            }
        }
    },
}


def _get(summary: str, params: list[dict] | None = None, public: bool = False) -> dict:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": {"description": "JSON"}, "400": ERROR, "401": ERROR},
    }
    if public:
        operation["security"] = []
    return {"get": operation}


def _action(summary: str, ok: str = "202") -> dict:
    return {
        "post": {
            "summary": summary,
            "parameters": [ID],
            "responses": {
                ok: {"description": "done or started"},
                "401": ERROR,
                "404": ERROR,
                "409": ERROR,
                "502": ERROR,
                "503": ERROR,
            },
        }
    }


COMMON = {
    "/healthz": _get("liveness: role, AE title, version (no credentials)", public=True),
    "/metrics": _get("Prometheus text (no credentials unless metrics_token)", public=True),
    "/api/v1/status": _get("counts by state"),
    "/api/v1/timeline": _get(
        "per-minute stores, commitments, reports, latency since start",
        [_param("minutes", "how many (1-180, default 60)", {"type": "integer"})],
    ),
    "/api/v1/peers": _get("each known AE: last association, pending, last error, next attempt"),
}

SCP = {
    "/api/v1/transactions": _get(
        "commitment requests, newest first",
        [
            _param("state", "state", {"enum": list(STATE_WORDS)}),
            _param("calling_aet", "requester's AE title"),
            _param("since", "received at or after (epoch or ISO 8601)", TIME),
            _param("until", "received before (epoch or ISO 8601)", TIME),
            _param("transaction_uid", "Transaction UID"),
            _param("patient_id", "Patient ID of a referenced instance"),
            _param("study_uid", "Study Instance UID of a referenced instance"),
            *PAGE,
        ],
    ),
    "/api/v1/transactions/{id}": _get(
        "one request: references with Failure Reasons (hex and words), delivery attempts",
        [
            ID,
            _param("refs_limit", "references shown (default 1000)", {"type": "integer"}),
            _param("refs_offset", "references skipped", {"type": "integer"}),
        ],
    ),
    "/api/v1/transactions/{id}/retry": _action("deliver the pending report now"),
    "/api/v1/transactions/{id}/give-up": _action("give the pending report up", "200"),
    "/api/v1/transactions/{id}/reverify": _action("verify the references again"),
    "/api/v1/instances": _get(
        "instances held, newest first, with the durable and unsafe flags",
        [
            _param("sop_instance_uid", "SOP Instance UID"),
            _param("study_uid", "Study Instance UID"),
            _param("series_uid", "Series Instance UID"),
            _param("patient_id", "Patient ID"),
            _param(
                "unsafe",
                "true: the copies a failed sync may have lost (never committed): the modality"
                " must send them again",
                {"type": "string", "enum": ["true", "false"]},
            ),
            *PAGE,
        ],
    ),
}

AGENT = {
    "/api/v1/transactions": _get(
        "sendings in the journal, newest first",
        [
            _param("state", "state", {"enum": list(SCU_TX_STATES)}),
            _param("archive_aet", "archive's AE title"),
            _param("since", "created at or after (epoch or ISO 8601)", TIME),
            _param("until", "created before (epoch or ISO 8601)", TIME),
            _param("transaction_uid", "Transaction UID"),
            *PAGE,
        ],
    ),
    "/api/v1/transactions/{id}": _get("one sending with its files", [ID]),
    "/api/v1/transactions/{id}/request-commitment": _action(
        "send the N-ACTION of a pending transaction again", "200"
    ),
    "/api/v1/transactions/{id}/resend-failed": _action("send the failed files again"),
}


def document(role: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"stgcmt {role} API",
            "version": __version__,
            "description": "DICOM Storage Commitment: transactions, instances, peers, actions."
            " Times are epoch seconds; statuses are {code, hex, words}.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            }
        },
        "security": [{"bearer": []}, {"basic": []}],
        "paths": COMMON | (SCP if role == "scp" else AGENT),
    }
