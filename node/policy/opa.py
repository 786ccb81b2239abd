"""The OPA server engine: the node's Rego evaluated by an OPA sidecar (docs/policy.md).

OPA is the reference implementation of Rego; running the node against it (and the
conformance corpus against both engines) is how we know the embedded engine answers the
same. So this engine must evaluate *exactly* the files the embedded engine loads: at
construction it pushes every non-test ``.rego`` under the policy dir (ids = relative
paths) and the policy data, removes modules a previous run left in the same namespace,
and reports the same :func:`~node.policy.revision.policy_revision`.

It talks to OPA through opa-python-client's synchronous ``OpaClient`` (one
``requests.Session``: one keep-alive connection pool, TLS verification against the
sidecar's CA by path, a client certificate for mTLS), but configures or bypasses the parts
that are unsound for a fail-closed hot path; OPA.md lists them. In short: no retries, a
``urllib3`` total-time ``Timeout`` on every call, no proxy / CA-bundle variables from the
environment, no rewriting of policies before upload, modules pushed until a fixed point
(OPA compiles each PUT alone), the root data document written with one ``PUT /v1/data``
(the client's helper would hit a redirect that drops the body), and decisions posted to
the data API straight on the session's own urllib3 pool (a third cheaper than through
``requests``, same connections, same TLS settings).

Failure mapping (never an allow by default):
  * OPA unreachable, refusing, TLS failure, past the deadline -> :class:`PolicyUnavailable`
    (the node denies with ``policy_unavailable``, audits and counts it);
  * an HTTP error, a response without ``result`` (undefined), a non-object, malformed JSON
    -> ``Decision.deny("policy_error")`` via :meth:`Decision.from_document`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import requests.adapters
import urllib3
from opa_client import OpaClient
from opa_client.errors import DeletePolicyError, RegoParseError
from urllib3 import HTTPConnectionPool
from urllib3.util import Timeout

from node.policy.decision import Decision, PolicyUnavailable
from node.policy.embedded import PolicyLoadError
from node.policy.opa_modules import (
    GUARD_ID,
    GUARD_PACKAGE,
    PACKAGE_PATH,
    PACKAGE_RE,
    PUSHING,
    RULE,
    fixed_point,
    guard_module,
    opa_errors,
)
from node.policy.revision import canonical_json, policy_files, policy_revision

log = logging.getLogger("liaison.policy")
# Seconds between attempts to give a restarted, empty OPA our policy again.
REPAIR_INTERVAL = 2.0

DEFAULT_PORT = 8181
DEFAULT_DEADLINE = 0.25  # seconds, per decision: the event loop is blocked this long at most
DEFAULT_PUSH_TIMEOUT = 10.0  # seconds, per upload call at start-up (OPA compiles on PUT)

_JSON_HEADERS = {"Content-Type": "application/json"}
_PACKAGE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _deadline(seconds: float) -> Timeout:
    """A total budget for one call: connect (incl. the TLS handshake) and read together.

    requests hands a urllib3 ``Timeout`` through unchanged; a plain float would bound the
    connect and *each* read separately, up to twice the deadline or more.
    """
    return Timeout(total=seconds)


class OpaEngine:
    """Decisions from an OPA server fed the node's own policy files and data."""

    name = "opa"
    waits_on_io = True  # an HTTP round trip to the sidecar

    def __init__(
        self,
        url: str,
        policy_dir: Path,
        data: Mapping[str, Any],
        *,
        deadline: float = DEFAULT_DEADLINE,
        push_timeout: float = DEFAULT_PUSH_TIMEOUT,
        ca: Path | None = None,
        client_certificate: Path | None = None,
        client_key: Path | None = None,
    ) -> None:
        if deadline <= 0 or push_timeout <= 0:
            raise ValueError("deadline and push_timeout must be positive")
        self.url = url.rstrip("/")
        host, port, tls = self._parse_url(self.url)
        if (client_certificate is None) != (client_key is None):
            raise ValueError("client_certificate and client_key go together")
        if not tls and (ca is not None or client_certificate is not None):
            raise ValueError(f"{url}: TLS material given for a plain http:// OPA URL")
        for path in (ca, client_certificate, client_key):
            if path is not None and not Path(path).is_file():
                raise PolicyLoadError(f"OPA TLS file not found: {path}")

        sources = [
            (p.relative_to(policy_dir).as_posix(), p.read_text(encoding="utf-8"))
            for p in policy_files(policy_dir)
        ]
        if not sources:
            raise PolicyLoadError(f"{policy_dir}: no .rego policy files")
        try:
            data_json = canonical_json(dict(data))
        except (TypeError, ValueError) as exc:
            raise PolicyLoadError(f"policy data is not JSON: {exc}") from exc
        self._revision = policy_revision(policy_dir, data)
        self.deadline = deadline
        self._closed = False
        self._lock = threading.Lock()

        # ssl=<path> makes the client use https and verify against exactly that CA file;
        # ssl=True verifies against the system store. retries=0: a retry would outlive the
        # deadline, and a failed call is a deny anyway.
        self._client = OpaClient(
            host=f"[{host}]" if ":" in host else host,
            port=port,
            ssl=str(ca) if ca is not None else tls,
            cert=(str(client_certificate), str(client_key)) if client_certificate else None,
            retries=0,
            timeout=_deadline(push_timeout),
        )
        session = self._client._session
        if not isinstance(session, requests.Session):  # pinned client: fail loudly if not
            raise TypeError("opa_client.OpaClient no longer keeps a requests.Session")
        # HTTP(S)_PROXY would send policy inputs to a proxy, REQUESTS_CA_BUNDLE would
        # override the sidecar CA, ~/.netrc would add credentials: none of them apply here.
        session.trust_env = False
        self._session = session
        self._decision_path = f"/v1/data/{GUARD_PACKAGE}/answer"
        self._decision_pool = self._pool_of(session, f"{self._client.root_url}/data")
        try:
            self._push(sources, data_json)
        except BaseException:
            self._client.close_connection()
            raise
        # Kept to push again if the sidecar restarts and comes back empty.
        self._sources, self._data_json = sources, data_json
        self._repair: threading.Thread | None = None
        self._last_repair = float("-inf")
        # The client's own calls (push above, explain below) keep push_timeout; the hot
        # path uses the decision deadline.
        self._timeout = _deadline(deadline)

    @staticmethod
    def _pool_of(session: requests.Session, url: str) -> HTTPConnectionPool:
        """The urllib3 pool behind ``session`` for ``url``, with the session's TLS settings.

        Decisions go straight to this pool: the same keep-alive connections as the
        client's calls (one pool, keyed by host and TLS context), without requests'
        per-call machinery, which costs ~300 µs of the ~900 µs a decision took through
        ``Session.post`` on loopback (OPA.md).
        """
        adapter = session.get_adapter(url)
        if not isinstance(adapter, requests.adapters.HTTPAdapter):
            raise TypeError(f"unexpected requests adapter {type(adapter).__name__}")
        probe = requests.Request("POST", url).prepare()
        pool = adapter.get_connection_with_tls_context(probe, session.verify, cert=session.cert)
        if not isinstance(pool, HTTPConnectionPool):
            raise TypeError(f"unexpected urllib3 pool {type(pool).__name__}")
        return pool

    @staticmethod
    def _parse_url(url: str) -> tuple[str, int, bool]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url}: OPA URL must be http(s)://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"{url}: OPA URL takes no path, query or credentials")
        return parts.hostname, parts.port or DEFAULT_PORT, parts.scheme == "https"

    @property
    def revision(self) -> str:
        return self._revision

    # --- start-up: make OPA hold exactly our files ----------------------------------------

    def _unavailable(self, what: str, exc: BaseException) -> PolicyUnavailable:
        return PolicyUnavailable(
            f"OPA at {self.url} unavailable while {what} ({exc}); start the OPA sidecar or "
            "correct [policy] opa_url"
        )

    def _delete_module(self, module_id: str) -> str | None:
        try:
            self._client.delete_policy(quote(module_id, safe="/"))
        except requests.RequestException as exc:
            raise self._unavailable(f"removing stale module {module_id}", exc) from exc
        except DeletePolicyError as exc:  # still needed by another, or owned by a bundle
            return f"{module_id}: OPA refused to remove this stale module: {exc.message}"
        return None

    def _put_module(self, name: str, text: str) -> str | None:
        try:
            # rego_compat=False: the client would otherwise rewrite a rejected v0 policy and
            # upload *that*, and OPA would run something no file says.
            self._client.update_policy_from_string(text, quote(name, safe="/"), rego_compat=False)
        except RegoParseError as exc:
            return opa_errors(exc, name)
        except requests.RequestException as exc:
            raise self._unavailable(f"pushing {name}", exc) from exc
        return None

    def _push(self, sources: list[tuple[str, str]], data_json: str) -> None:
        # First: whichever engine decided from this OPA so far now fails closed, until the
        # last step below names our revision (for good, if this push fails half-way).
        self._put_guard(PUSHING)
        self._push_files(sources, data_json)
        self._put_guard(self._revision)

    def _put_guard(self, revision: str) -> None:
        error = self._put_module(GUARD_ID, guard_module(revision))
        if error is not None:
            raise PolicyLoadError(f"OPA refused the engine's guard module: {error}")

    def _push_files(self, sources: list[tuple[str, str]], data_json: str) -> None:
        ours = {name for name, _ in sources}
        roots = {m.group(1) for _, text in sources if (m := PACKAGE_RE.search(text))}
        try:
            existing = self._client.get_policies_info()
        except requests.HTTPError as exc:
            raise PolicyLoadError(f"OPA refused to list its policies: {exc}") from exc
        except requests.RequestException as exc:
            raise self._unavailable("listing policies", exc) from exc
        # Modules a previous run pushed (a renamed or deleted file) would still be
        # evaluated: drop those in our namespace. Others (system.authz, ...) are the
        # operator's and stay.
        prefix = f"{self._client.root_url}/data/"
        stale = [
            module_id
            for module_id, info in existing.items()
            if module_id not in ours
            and str(info.get("path", "")).removeprefix(prefix).split("/", 1)[0] in roots
        ]
        steps: dict[str, Callable[[], str | None]] = {}
        for module_id in stale:
            steps[f"remove {module_id}"] = partial(self._delete_module, module_id)
        for name, text in sources:
            steps[f"push {name}"] = partial(self._put_module, name, text)
        failed = fixed_point(steps)
        if failed:
            raise PolicyLoadError(
                f"OPA refused {len(failed)} of {len(steps)} step(s) (a module that fails to "
                "compile also fails those that use it): "
                + "; ".join(failed[step] for step in sorted(failed))
            )
        # One PUT of the root document replaces whatever data was there. The client's
        # update_or_create_data(data, "") would PUT /v1/data/, get a 301 and re-send an
        # empty body.
        try:
            response = self._session.put(
                f"{self._client.root_url}/data",
                data=data_json.encode(),
                headers={"Content-Type": "application/json"},
                timeout=self._client.timeout,
            )
        except requests.RequestException as exc:
            raise self._unavailable("pushing the policy data", exc) from exc
        if response.status_code != 204:
            raise PolicyLoadError(f"policy data: OPA refused it: {response.text.strip()}")

    # --- the hot path ---------------------------------------------------------------------

    def decide(self, policy_input: Mapping[str, Any], *, input_json: str | None = None) -> Decision:
        """``POST /v1/data/liaison/exchange/decision`` on a pooled keep-alive connection.

        Bounded by the deadline as a whole (connect + send + read). It blocks while OPA
        thinks, so the node asks it from a policy thread (``waits_on_io``), never on its
        event loop.
        """
        if self._closed:
            raise PolicyUnavailable("OPA engine is closed")
        try:
            # An input that is not JSON (or not UTF-8: a lone surrogate) is the embedded
            # engine's policy_error too.
            if input_json is None:
                input_json = json.dumps(policy_input, allow_nan=False)
            body = b'{"input":' + input_json.encode() + b"}"
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            return Decision.deny("policy_error", self._revision)
        try:
            response = self._decision_pool.urlopen(
                "POST",
                self._decision_path,
                body=body,
                headers=_JSON_HEADERS,
                timeout=self._timeout,
                retries=False,  # one attempt: a retry could outlive the deadline
                redirect=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Refused, reset, TLS failures, connect and read timeouts, a closed pool: we
            # could not ask. (HTTP statuses are not exceptions here: read below.)
            raise PolicyUnavailable(f"OPA at {self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            return Decision.deny("policy_error", self._revision)
        try:
            document = json.loads(response.data)
        except ValueError:  # includes UnicodeDecodeError
            return Decision.deny("policy_error", self._revision)
        answer = document.get("result") if isinstance(document, dict) else None
        if not isinstance(answer, dict) or answer.get("revision") != self._revision:
            # Not our files in OPA (any more): nothing it says is a decision of ours.
            held = answer.get("revision") if isinstance(answer, dict) else None
            if held is None:
                self._repair_in_background()
            raise PolicyUnavailable(
                f"OPA at {self.url} holds policy revision {held or 'none'}, "
                f"not {self._revision} (restarted, or pushed over by another engine)"
            )
        if "decision" not in answer:
            return Decision.deny("policy_error", self._revision)  # undefined
        return Decision.from_document(answer["decision"], self._revision)

    def _repair_in_background(self) -> None:
        """OPA answers with no revision at all: it restarted empty. Push our files again,
        off the request path, at most once per REPAIR_INTERVAL; until then, and if the push
        fails, decisions stay denied. (Another revision means another engine pushed over
        ours, e.g. a reload: not ours to undo.)"""
        with self._lock:
            now = time.monotonic()
            busy = self._repair is not None and self._repair.is_alive()
            if self._closed or busy or now - self._last_repair < REPAIR_INTERVAL:
                return
            self._last_repair = now
            self._repair = threading.Thread(target=self._repush, name="opa-repush", daemon=True)
            self._repair.start()

    def _repush(self) -> None:
        try:
            self._push(self._sources, self._data_json)
        except (PolicyUnavailable, PolicyLoadError) as exc:
            log.warning(
                "OPA at %s lost the policy and could not be given it again: %s", self.url, exc
            )
            return
        log.warning(
            "OPA at %s had lost the policy (restarted?); pushed revision %s again",
            self.url,
            self._revision,
        )

    def explain(self, policy_input: Mapping[str, Any], mode: str = "fails") -> list[str]:
        """OPA's trace of the decision, one line per step (``liaison policy explain``).

        Operator tooling, not the request path: it goes through the client's ``query_rule``
        as is (the data API with ``?explain=<mode>&pretty=true``), bounded by
        ``push_timeout``. Modes: ``notes``, ``fails``, ``full``, ``debug``.
        """
        if mode not in ("notes", "fails", "full", "debug"):
            raise ValueError(f"unknown explain mode {mode!r}")
        if self._closed:
            raise PolicyUnavailable("OPA engine is closed")
        document = json.loads(json.dumps(policy_input, allow_nan=False))  # ValueError early
        try:
            answer = self._client.query_rule(
                document, PACKAGE_PATH, RULE, query_params={"explain": mode, "pretty": "true"}
            )
        except requests.RequestException as exc:
            raise PolicyUnavailable(f"OPA at {self.url}: {type(exc).__name__}: {exc}") from exc
        lines = answer.get("explanation") if isinstance(answer, dict) else None
        return [str(line) for line in lines] if isinstance(lines, list) else []

    @property
    def sources(self) -> Sequence[tuple[str, str]]:
        """The ``(name, text)`` policy modules this engine pushed."""
        return tuple(self._sources)

    def rule_values(
        self, package: str, rules: Collection[str], policy_input: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The package's document, one ``POST /v1/data/<package>``, cut to ``rules``
        (``liaison policy explain``; bounded by ``push_timeout``). OPA, the reference, gives
        a whole package the values its rules have one by one; one call per package instead
        of one per rule keeps explaining the whole corpus quick. Undefined rules are absent."""
        if not _PACKAGE_NAME_RE.fullmatch(package):
            raise ValueError(f"not a package name: {package!r}")
        if self._closed:
            raise PolicyUnavailable("OPA engine is closed")
        body = json.dumps({"input": policy_input}, allow_nan=False)
        url = f"{self._client.root_url}/data/{package.replace('.', '/')}"
        try:
            response = self._session.post(
                url, data=body.encode(), headers=_JSON_HEADERS, timeout=self._client.timeout
            )
        except requests.RequestException as exc:
            raise PolicyUnavailable(f"OPA at {self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise PolicyLoadError(
                f"data.{package}: OPA answered {response.status_code}: {response.text.strip()}"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        document = answer.get("result", {}) if isinstance(answer, dict) else None
        if not isinstance(document, dict):
            raise PolicyLoadError(f"data.{package}: OPA's answer is not a package document")
        return {rule: document[rule] for rule in rules if rule in document}

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._client.close_connection()
