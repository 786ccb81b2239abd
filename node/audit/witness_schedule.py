"""The running node's witnessing schedule: every `[witness] interval_s`, each active peer.

`node.audit.witness.Witness` holds the checks; this runs them against the peers' OversightService
(`federation.oversight.OversightClient`). A round, for every ACTIVE member with role
"node" other than this one, all peers at once:

1. GetCheckpoint from the peer, then `Witness.observe` (a consistency proof is fetched from
   the peer when its tree grew);
2. GetWitnessedCheckpoints from the peer, then `Witness.compare` (the peer as a witness of
   the third logs; proofs are fetched from those logs) and `Witness.collect` (the peer's
   cosignature on this node's own latest checkpoint, served with it by GetCheckpoint).

Each call has a deadline; a peer that cannot be reached, or whose answer does not come, is
counted as `unreachable` in `liaison_witness_failures_total` and the round goes on with the
others. A log that refuses a consistency proof between two sizes it signed (both are in
notes it signed) raises `ProofRefused`, which the witness keeps as a split view; a proof that
could not be fetched for any other reason is `proof_unavailable`. Channels are opened for a
round and closed at its end, so rotated credentials and a changed directory take effect at
the next round.

The first round runs after a short random delay (at most 5 s, or half the interval), so a
federation's nodes witness each other soon after they start without calling all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence

from federation.client import ClientIdentity
from federation.directory import Directory, Member, MemberStatus
from federation.errors import InvalidRequest, LiaisonError, ProofFailed
from federation.oversight import OversightClient
from node.audit.witness import ProofRefused, Witness
from node.audit.witness_state import Outcome
from node.metrics import NodeMetrics

log = logging.getLogger("liaison.witness")

# Reasons with which a log refuses a proof between sizes it signed: an honest log never does.
PROOF_REFUSALS = frozenset({"beyond_checkpoint", "invalid_range", "no_checkpoint"})
# The first round waits at most this long (and at most half the interval).
FIRST_ROUND_MAX_DELAY_S = 5.0


class Witnessing:
    """The schedule: `run()` until cancelled, or `round()` once."""

    def __init__(
        self,
        witness: Witness,
        directory: Callable[[], Directory],
        identity: Callable[[], ClientIdentity],
        own_checkpoint: Callable[[], str | None],
        interval: float,
        *,
        endpoints: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.witness = witness
        self._directory = directory
        self._identity = identity
        self._own_checkpoint = own_checkpoint
        self.interval = interval
        self._endpoints = dict(endpoints or {})
        self._timeout = timeout
        self._metrics = metrics
        # The logs whose freshness is exported: those witnessed before (the state file's).
        self._exported = {log_id for log_id, _ in witness.cosigned()}

    async def run(self) -> None:
        await asyncio.sleep(random.uniform(0, min(FIRST_ROUND_MAX_DELAY_S, self.interval / 2)))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # a round must never end the schedule
                log.exception("a witnessing round failed")
            # A little jitter keeps the nodes of a federation from calling in lockstep.
            wait = self.interval * random.uniform(0.9, 1.1) - (loop.time() - started)
            await asyncio.sleep(max(wait, 0.0))

    def peers(self, directory: Directory) -> list[Member]:
        """The members witnessed: active, role node, not this node, with an endpoint."""
        return [
            m
            for m in directory.members
            if m.is_node
            and m.status is MemberStatus.ACTIVE
            and m.node_id != self.witness.node_id
            and (m.endpoint or m.node_id in self._endpoints)
        ]

    async def round(self) -> dict[str, Outcome]:
        """Witness every peer once, concurrently; each peer's observe outcome."""
        try:
            directory = self._directory()
        except Exception as exc:  # no directory in force: nobody to check keys against
            log.warning("not witnessing this round: %s", exc)
            return {}
        peers = self.peers(directory)
        self._forget_gone({m.node_id for m in peers})
        if not peers:
            return {}
        identity = self._identity()
        try:  # it reads the checkpoints file or the database: not on the event loop
            own = await asyncio.to_thread(self._own_checkpoint)
        except Exception as exc:  # the peers are still witnessed; nothing is collected
            log.error("not collecting cosignatures this round: %r", exc)
            own = None
        clients: dict[str, OversightClient] = {}
        try:
            for member in peers:
                endpoint = self._endpoints.get(member.node_id) or None
                clients[member.node_id] = OversightClient.for_member(identity, member, endpoint)
            results = await asyncio.gather(
                *(self._peer(peer, clients, own) for peer in clients), return_exceptions=True
            )
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    await client.close()
        outcomes: dict[str, Outcome] = {}
        for peer, result in zip(clients, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                log.error("witnessing %s failed: %r", peer, result)
                continue
            outcomes[peer] = result
        return outcomes

    def _forget_gone(self, witnessed: set[str]) -> None:
        """Stop exporting the freshness of logs no longer witnessed (a member suspended,
        revoked or removed), or LiaisonWitnessStale would fire for them for ever. A split
        view's gauge stays: it is evidence, not freshness."""
        if self._metrics is not None:
            for gone in self._exported - witnessed:
                for gauge in (
                    self._metrics.witness_last_success,
                    self._metrics.witness_checkpoint_size,
                ):
                    with contextlib.suppress(KeyError):
                        gauge.remove(gone)
        self._exported = set(witnessed)

    async def _peer(
        self, peer: str, clients: Mapping[str, OversightClient], own: str | None
    ) -> Outcome:
        """Witness one peer's log, compare its views with ours, and collect its cosignature
        on `own` (this node's latest checkpoint, read once for the round)."""
        client = clients[peer]
        try:
            note = await self._checkpoint(client)
        except ProofFailed as exc:
            return self.witness.fail(peer, Outcome.BAD_NOTE, f"its checkpoint is refused: {exc}")
        except (LiaisonError, TimeoutError) as exc:
            return self.witness.fail(peer, Outcome.UNREACHABLE, f"no checkpoint: {exc}")
        outcome = await self.witness.observe(
            peer, note, lambda old, new: self._proof(client, old, new)
        )
        try:
            views = await client.get_witnessed_checkpoints(self._timeout)
        except (LiaisonError, TimeoutError) as exc:
            self.witness.fail(peer, Outcome.UNREACHABLE, f"no witnessed checkpoints: {exc}")
            return outcome

        async def from_log(log_id: str, old: int, new: int) -> Sequence[bytes]:
            other = clients.get(log_id)
            if other is None:
                raise LookupError(f"{log_id} is not witnessed by this node")
            return await self._proof(other, old, new)

        await self.witness.compare(peer, views, from_log)
        if own is not None:
            self.witness.collect(peer, views, own)
        return outcome

    async def _checkpoint(self, client: OversightClient) -> str:
        try:
            return (await client.get_checkpoint(self._timeout))[1]
        except InvalidRequest as exc:
            if "no_checkpoint" not in exc.reasons:
                raise
        # An empty log signs nothing; the refusal is itself an entry, so now it can.
        return (await client.get_checkpoint(self._timeout))[1]

    async def _proof(self, client: OversightClient, old: int, new: int) -> list[bytes]:
        """The log's consistency proof; ProofRefused if it refuses one between sizes it
        signed (the witness asks only for those)."""
        try:
            return await client.get_consistency_proof(old, new, self._timeout)
        except LiaisonError as exc:
            if PROOF_REFUSALS.intersection(exc.reasons):
                raise ProofRefused(f"{client.peer} refused a proof {old} -> {new}: {exc}") from exc
            raise
