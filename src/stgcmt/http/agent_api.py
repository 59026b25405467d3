"""The SCU agent's JSON API: the journal's transactions (filters, paging; one with its files,
C-STORE statuses and Failure Reasons in hex and words), the archives sent to, and two actions:
request commitment again for a pending transaction whose N-ACTION never reached the archive,
and send a finished transaction's failed files again. Both go through the
:class:`~stgcmt.scu.agent.Agent`; nothing here writes the journal."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from stgcmt.http.api import Api, Query, not_found, path_id, status_of
from stgcmt.http.errors import ApiError
from stgcmt.http.timeline import Timeline
from stgcmt.scu import AssociationError
from stgcmt.scu.agent import Agent
from stgcmt.storage import STORAGE_ERRORS
from stgcmt.storage.queries import SCU_TX_STATES

log = logging.getLogger("stgcmt.http")


def file_row(row: dict[str, Any]) -> dict[str, Any]:
    return row | {
        "store_status": status_of(row["store_status"]),
        "failure_reason": status_of(row["failure_reason"]) if row["failure_reason"] else None,
    }


def _transaction_filters(query: Query) -> dict[str, Any]:
    return {
        "state": query.choice("state", SCU_TX_STATES),
        "archive_aet": query.aet("archive_aet"),
        "since": query.time("since"),
        "until": query.time("until"),
        "transaction_uid": query.uid("transaction_uid"),
    }


class AgentApi(Api):
    role = "agent"

    def __init__(self, agent: Agent, timeline: Timeline, pool: ThreadPoolExecutor) -> None:
        super().__init__(agent.aet, agent.queries, timeline, pool)
        self.agent = agent
        self._lock = threading.Lock()
        self._resending: set[int] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.get("/api/v1/transactions", self.transactions),
            web.get("/api/v1/transactions/{id}", self.transaction),
            web.post("/api/v1/transactions/{id}/request-commitment", self.request_commitment),
            web.post("/api/v1/transactions/{id}/resend-failed", self.resend_failed),
            web.get("/api/v1/peers", self.peers),
        ]

    async def transactions(self, request: web.Request) -> web.Response:
        return await self.search(request, _transaction_filters, self.queries.find_transactions)

    async def transaction(self, request: web.Request) -> web.Response:
        tx_id = path_id(request)
        Query(request).done()
        found = await self.run(self.queries.transaction, tx_id)
        if found is None:
            raise not_found(f"transaction #{tx_id}")
        return web.json_response(found | {"files": [file_row(f) for f in found["files"]]})

    async def request_commitment(self, request: web.Request) -> web.Response:
        tx_id = path_id(request)
        Query(request).done()
        status = await self._action(self.agent.request_commitment, tx_id)
        return web.json_response(
            {
                "detail": "N-ACTION sent again; the report comes to the listener",
                "n_action_status": status_of(status),
            },
            status=200 if status == 0 else 502,
        )

    async def resend_failed(self, request: web.Request) -> web.Response:
        """Starts the sending (it waits for the report) and answers at once."""
        tx_id = path_id(request)
        Query(request).done()
        found = await self.run(self.queries.transaction, tx_id)
        if found is None:
            raise not_found(f"transaction #{tx_id}")
        if found["state"] != "failed":
            raise ApiError(409, "conflict", f"transaction #{tx_id} is {found['state']}, not failed")
        with self._lock:
            if tx_id in self._resending:
                raise ApiError(409, "conflict", f"the failed files of #{tx_id} are being sent")
            self._resending.add(tx_id)
        threading.Thread(
            target=self._resend, args=(tx_id,), name=f"stgcmt-resend-{tx_id}", daemon=True
        ).start()
        return web.json_response(
            {"detail": f"sending the failed files of #{tx_id} again as a new transaction"},
            status=202,
        )

    def _resend(self, tx_id: int) -> None:
        try:
            result = self.agent.resend_failed(tx_id)
        except Exception as exc:  # a thread of its own: say what happened, never raise
            log.error("re-sending the failed files of #%d failed: %s", tx_id, exc)
            return
        finally:
            with self._lock:
                self._resending.discard(tx_id)
        log.info("re-sending the failed files of #%d: exit status %d", tx_id, result.exit_status)

    async def _action(self, action: Any, tx_id: int) -> Any:
        try:
            return await self.run(action, tx_id)
        except LookupError as exc:
            raise ApiError(404, "not-found", str(exc)) from None
        except ValueError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except AssociationError as exc:
            raise ApiError(502, "archive-unreachable", str(exc)) from None
        except STORAGE_ERRORS as exc:
            raise ApiError(
                503, "storage-unavailable", f"the journal cannot record: {exc}"
            ) from None

    async def peers(self, request: web.Request) -> web.Response:
        Query(request).done()
        rows = await self.run(self.queries.peers)
        for row in rows:
            row["last_association"] = self.timeline.last_association(row["archive_aet"] or "")
        return web.json_response({"items": rows})
