"""The archive's JSON API: transactions (filters, paging; one with its references, Failure
Reasons in hex and words, delivery attempts), instances, peers, and the actions an
administrator needs (retry a report now, give it up, verify again), which go through the
:class:`~stgcmt.scp.service.StorageCommitmentSCP` and wake its worker; nothing here writes a
database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from stgcmt.http.api import Api, Query, not_found, path_id, status_of
from stgcmt.http.errors import ApiError
from stgcmt.http.timeline import Timeline
from stgcmt.scp.service import StorageCommitmentSCP
from stgcmt.storage import STORAGE_ERRORS
from stgcmt.storage.queries import STATE_WORDS
from stgcmt.storage.scp_journal import REPORT_PENDING, Transaction

log = logging.getLogger("stgcmt.http")

MAX_REFERENCES_SHOWN = 1000


def _outcome(reason: int | None) -> str:
    if reason is None:
        return "not verified yet"
    return "committed" if reason == 0 else "failed"


def transaction_row(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"state_words": STATE_WORDS.get(row["state"], row["state"])}


def reference_row(row: dict[str, Any]) -> dict[str, Any]:
    reason = row.pop("failure_reason")
    durable = row.pop("durable")
    return row | {
        "outcome": _outcome(reason),
        "failure_reason": status_of(reason) if reason else None,
        "in_index": durable is not None,
        "durable": bool(durable),
    }


def _instance(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"durable": bool(row["durable"]), "unsafe": bool(row["unsafe"])}


def _boolean(query: Query, name: str) -> bool | None:
    """``true`` or ``false`` (anything else is a 400: a typo must not list everything)."""
    value = query.choice(name, ("true", "false"))
    return None if value is None else value == "true"


def _transaction_filters(query: Query) -> dict[str, Any]:
    return {
        "state": query.choice("state", STATE_WORDS),
        "calling_aet": query.aet("calling_aet"),
        "since": query.time("since"),
        "until": query.time("until"),
        "transaction_uid": query.uid("transaction_uid"),
        "patient_id": query.text("patient_id"),
        "study_uid": query.uid("study_uid"),
    }


def _instance_filters(query: Query) -> dict[str, Any]:
    return {
        "sop_instance_uid": query.uid("sop_instance_uid"),
        "study_uid": query.uid("study_uid"),
        "series_uid": query.uid("series_uid"),
        "patient_id": query.text("patient_id"),
        "unsafe": _boolean(query, "unsafe"),
    }


class ScpApi(Api):
    role = "scp"

    def __init__(self, scp: StorageCommitmentSCP, timeline: Timeline, pool: ThreadPoolExecutor):
        super().__init__(scp.config.aet, scp.queries, timeline, pool)
        self.scp = scp

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.get("/api/v1/transactions", self.transactions),
            web.get("/api/v1/transactions/{id}", self.transaction),
            web.post("/api/v1/transactions/{id}/retry", self.retry),
            web.post("/api/v1/transactions/{id}/give-up", self.give_up),
            web.post("/api/v1/transactions/{id}/reverify", self.reverify),
            web.get("/api/v1/instances", self.instances),
            web.get("/api/v1/peers", self.peers),
        ]

    async def transactions(self, request: web.Request) -> web.Response:
        return await self.search(
            request, _transaction_filters, self.queries.find_transactions, transaction_row
        )

    async def transaction(self, request: web.Request) -> web.Response:
        tx_id = path_id(request)
        query = Query(request)
        limit = query.integer("refs_limit", MAX_REFERENCES_SHOWN, 1, 100_000)
        offset = query.integer("refs_offset", 0, 0, 10**9)
        query.done()
        found = await self.run(
            lambda: self.queries.transaction(tx_id, refs_limit=limit, refs_offset=offset)
        )
        if found is None:
            raise not_found(f"transaction #{tx_id}")
        references = [reference_row(ref) for ref in found.pop("references")]
        delivery = {
            "attempts": found["attempts"],
            "last_error": found["last_error"],
            "next_attempt_at": found["next_attempt_at"],
            "delivered_at": found["delivered_at"],
            "delivered_via": found["delivered_via"],
            "history": found.pop("delivery_attempts"),
        }
        return web.json_response(
            transaction_row(found)
            | {"references": references, "refs_offset": offset, "delivery": delivery}
        )

    async def retry(self, request: web.Request) -> web.Response:
        return await self._action(request, self.scp.retry_report, 202, "delivery attempt due now")

    async def give_up(self, request: web.Request) -> web.Response:
        return await self._action(request, self.scp.give_up_report, 200, "report given up")

    async def reverify(self, request: web.Request) -> web.Response:
        return await self._action(request, self.scp.reverify, 202, "verification queued")

    async def _action(
        self,
        request: web.Request,
        action: Callable[[int], Transaction],
        status: int,
        done: str,
    ) -> web.Response:
        tx_id = path_id(request)
        Query(request).done()
        try:
            tx = await self.run(action, tx_id)
        except LookupError as exc:
            raise ApiError(404, "not-found", str(exc)) from None
        except ValueError as exc:
            raise ApiError(409, "conflict", f"{exc} (only {REPORT_PENDING} allows it)") from None
        except STORAGE_ERRORS as exc:
            raise ApiError(
                503, "storage-unavailable", f"the journal cannot record: {exc}"
            ) from None
        log.info("HTTP %s %s: %s", request.method, request.path, done)
        return web.json_response(
            {"detail": done, "id": tx.id, "state": tx.state, "transaction_uid": tx.transaction_uid},
            status=status,
        )

    async def instances(self, request: web.Request) -> web.Response:
        return await self.search(request, _instance_filters, self.queries.find_instances, _instance)

    async def peers(self, request: web.Request) -> web.Response:
        """Configured peers and every AE the journal or this run has seen."""
        Query(request).done()
        rows = {row["calling_aet"]: row for row in await self.run(self.queries.peers)}
        configured = {r.aet: r for r in self.scp.config.remotes}
        names = sorted({*rows, *configured, *self.timeline.peers_seen()})
        return web.json_response({"items": [self._peer(name, rows, configured) for name in names]})

    def _peer(self, aet: str, rows: dict[str, dict], configured: dict) -> dict[str, Any]:
        remote = configured.get(aet)
        row = rows.get(aet, {})
        return {
            "aet": aet,
            "configured": f"{remote.aet}@{remote.host}:{remote.port}" if remote else None,
            "report_route": self.scp.config.report_route(aet) if remote else "same",
            "transactions": row.get("transactions", 0),
            "reports_pending": row.get("reports_pending") or 0,
            "reports_given_up": row.get("reports_given_up") or 0,
            "last_request_at": row.get("last_request_at"),
            "last_delivered_at": row.get("last_delivered_at"),
            "last_delivery_error": row.get("last_error"),
            "next_attempt_at": row.get("next_attempt_at"),
            "last_association": self.timeline.last_association(aet),
        }
