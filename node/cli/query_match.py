"""`liaison query match`: ask peers whether they hold a record, one row per peer.

One query (identifier flags), or a batch (`--file identifiers.csv --out results.jsonl`,
node/cli/query_batch.py). Peers are asked through the fan-out client
(`federation.fanout_client`): concurrently, within one deadline, transient failures retried
as new requests, a peer that keeps failing held back by its breaker.

Results go to standard output (a table, `--json` or `--jsonl`); progress goes to standard
error, and only on a terminal. Exit status: 0 every peer answered (a refusal is an
answer), 3 some peer did not (unavailable, timed out, or an error), 2 a usage error
(nothing asked), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.shared import Subparsers, command

if TYPE_CHECKING:
    from federation.fanout import PeerResult
    from federation.fanout_client import FanoutClient
    from federation.model import MatchQuery

EXIT_ALL_ANSWERED = 0
EXIT_USAGE = 2
EXIT_SOME_UNANSWERED = 3

EXIT_CODES = """exit status:
  0    every peer answered (hit, no-hit, refused or invalid)
  2    usage error: a wrong flag, an unknown peer, a bad file; nothing was asked
  3    some peer did not answer (unavailable, timed-out or error); the others' answers
       are printed
  130  interrupted (Ctrl-C); with --file, run the same command again to ask the rest"""

# CLI flag (and CSV column) -> identifier kind.
IDENTIFIER_FIELDS = {
    "document_number": "document_number",
    "vin": "vin",
    "registration_number": "registration_number",
    "serial_number": "serial_number",
}
PERSON_FIELDS = ("family_name", "given_names", "date_of_birth")


def identifiers_from(values: Mapping[str, str | None], where: str = "") -> list[tuple[str, str]]:
    """The identifiers named by flags or a CSV row (field name -> value); BadQuery when
    there is none, or a person named only in part."""
    from federation.errors import BadQuery

    out = [(kind, str(values[f])) for f, kind in IDENTIFIER_FIELDS.items() if values.get(f)]
    person = [values.get(f) or "" for f in PERSON_FIELDS]
    if any(person):
        if not all(person):
            raise BadQuery(
                "",
                f"{where}a person is matched on family name, given names and date of birth "
                "together (--family-name, --given-names, --date-of-birth)",
            )
        out.append(("name_dob", "|".join(person)))
    if not out:
        raise BadQuery("", f"{where}give at least one identifier (e.g. --document-number)")
    return out


def identifiers_from_args(args: argparse.Namespace) -> list[tuple[str, str]]:
    return identifiers_from({f: getattr(args, f) for f in (*IDENTIFIER_FIELDS, *PERSON_FIELDS)})


def result_row(r: PeerResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "peer": r.peer,
        "outcome": r.outcome.value,
        "elapsed_ms": round(r.elapsed_ms, 1),
        "attempts": r.attempts,
    }
    if r.answer is not None:
        row["record_refs"] = list(r.answer.record_refs)
        row["policy_revision"] = r.answer.policy_revision
        row["audit_entry"] = r.answer.audit_entry
    if r.reasons:
        row["reasons"] = list(r.reasons)
    if r.message and r.answer is None:
        row["message"] = r.message
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("PEER", "OUTCOME", "DETAIL", "MS")
    lines = [header]
    for row in rows:
        if "record_refs" in row:
            detail = ", ".join(row["record_refs"]) or "-"
        else:
            detail = ", ".join(row.get("reasons", [])) or row.get("message", "")
        lines.append((row["peer"], row["outcome"], detail, f"{row['elapsed_ms']:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>7}" for a, b, c, d in lines
    )


def exit_status(outcomes: Iterable[PeerResult]) -> int:
    answered = all(r.outcome.answered for r in outcomes)
    return EXIT_ALL_ANSWERED if answered else EXIT_SOME_UNANSWERED


def named_peers(args: argparse.Namespace) -> list[str] | None:
    """The peers the flags name, in order and once each; None for --all."""
    if args.all:
        return None
    named: list[str] = []
    for item in [*(args.peer or []), *(args.peers or [])]:
        for peer in item.split(","):
            if peer.strip() and peer.strip() not in named:
                named.append(peer.strip())
    if not named:
        from federation.errors import BadQuery

        raise BadQuery("", "--peers names no peer: give node ids, e.g. --peers FR-DGPN,NL-KLPD")
    return named


def open_client(args: argparse.Namespace) -> tuple[FanoutClient, str]:
    """A fan-out client for the directory the node itself would use (its file, or a newer
    one it learned from a peer, never an older one), and our node id."""
    from federation.fanout_client import FanoutClient
    from federation.pki import public_key_from_text
    from node.config import load_config
    from node.directory_state import for_node as directory_for_node

    config = load_config(args.config)
    authority = public_key_from_text(config.trust.authority_public_key.read_text())
    directory = directory_for_node(config, authority).load()
    client = FanoutClient.from_directory(
        config.client_identity(), directory, max_in_flight=args.concurrency
    )
    return client, config.node.id


def query_template(
    args: argparse.Namespace, me: str, category: str
) -> Callable[[Sequence[tuple[str, str]]], MatchQuery]:
    """The query for a set of identifiers, under the flags' envelope (each attempt to each
    peer gets its own nonce from the client)."""
    from federation.client import match_query, new_envelope
    from federation.vocabulary import LegalBasis

    def make(identifiers: Sequence[tuple[str, str]]) -> MatchQuery:
        envelope = new_envelope(
            me,
            args.purpose,
            legal_basis=LegalBasis(args.legal_basis),
            legal_reference=args.legal_reference,
            case_reference=args.case,
        )
        return match_query(envelope, category, identifiers)

    return make


async def run_match_command(args: argparse.Namespace) -> int:
    if args.file is not None:
        from node.cli.query_batch import run_batch

        return await run_batch(args)
    from federation.errors import BadQuery
    from federation.fanout_client import ALL
    from node.cli.progress import progress_for

    if args.out is not None:
        raise BadQuery("", "--out goes with --file (a batch); one query prints its results")
    if not args.category:
        raise BadQuery("", "give --category (e.g. travel_document)")
    identifiers = identifiers_from_args(args)
    client, me = open_client(args)
    try:
        named = named_peers(args)
        peers = client.resolve(ALL if named is None else named)
        query = query_template(args, me, args.category)(identifiers)
        with progress_for(f"asking {len(peers)} peers", len(peers)) as progress:

            def on_result(r: PeerResult) -> None:
                progress.advance(f"{r.peer}: {r.outcome.value}")
                if args.jsonl:
                    sys.stdout.write(json.dumps(result_row(r)) + "\n")
                    sys.stdout.flush()

            results = await client.match(query, peers, args.timeout, on_result)
    finally:
        await client.close()
    rows = [result_row(r) for r in results]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not args.jsonl:
        print(format_table(rows))
    return exit_status(results)


def _query_match(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(run_match_command(args))


BASES = ["none", "bilateral_agreement", "mlat", "jit", "treaty"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def register_match(query: Subparsers) -> None:
    p = command(query, "match", "hit/no-hit query to some peers or all peers", _query_match)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "batch: --file identifiers.csv --out results.jsonl asks every row of the file (a\n"
        "header row names its columns: document_number, vin, registration_number,\n"
        "serial_number, family_name, given_names, date_of_birth, and optionally id and\n"
        "category) and appends one JSON line per row and peer to --out as each answers.\n"
        "Interrupted, the same command resumes: what --out already holds is not asked\n"
        "again.\n\n" + EXIT_CODES
    )
    p.add_argument("--config", type=Path, required=True, help="your node's node.toml")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--peers", action="append", help="peer node ids, comma-separated")
    target.add_argument("--peer", action="append", help="one peer node id (repeatable)")
    target.add_argument("--all", action="store_true", help="every active peer in the directory")
    p.add_argument("--category", help="what to match, e.g. travel_document (or a CSV column)")
    p.add_argument("--purpose", required=True)
    p.add_argument("--legal-basis", default="none", choices=BASES)
    p.add_argument("--legal-reference", default="")
    p.add_argument("--case", default="", help="your case file reference")
    for field in (*IDENTIFIER_FIELDS, *PERSON_FIELDS):
        p.add_argument(f"--{field.replace('_', '-')}", dest=field)
    p.add_argument(
        "--timeout",
        "--deadline",
        type=_positive,
        default=5.0,
        help="seconds for all peers to answer (for each row, with --file); default 5",
    )
    p.add_argument(
        "--concurrency",
        type=_at_least_one,
        default=32,
        help="calls in flight at most, over all peers (and rows); default 32",
    )
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON array at the end")
    output.add_argument(
        "--jsonl", action="store_true", help="print one JSON line per peer as it answers"
    )
    p.add_argument("--file", type=Path, help="a CSV of identifiers to ask, one query a row")
    p.add_argument("--out", type=Path, help="with --file: the JSON lines file of results")
