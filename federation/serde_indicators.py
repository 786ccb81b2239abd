"""GetIndicators' wire conversions, beside federation/serde.py (which they would grow past
its size): the request's window, and the figures, already suppressed by the node, as
`federation.indicators.Indicators`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from google.protobuf import timestamp_pb2

from federation.indicators import (
    GRANULARITIES,
    Cell,
    Figure,
    Granularity,
    Indicators,
    IndicatorsQuery,
    keys_from,
)
from federation.serde import WireError, _from_bytes
from federation.wire.liaison.exchange.v1 import oversight_pb2 as opb


def _stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def _granularity(text: str) -> Granularity:
    if text not in GRANULARITIES:
        raise WireError("granularity", f"{text!r} is not one of {', '.join(GRANULARITIES)}")
    return text


def indicators_request_to_bytes(q: IndicatorsQuery) -> bytes:
    msg = opb.GetIndicatorsRequest(since=_stamp(q.since), granularity=q.granularity)
    if q.until is not None:
        msg.until.CopyFrom(_stamp(q.until))
    return msg.SerializeToString()


def indicators_request_from_bytes(raw: bytes) -> IndicatorsQuery:
    msg = _from_bytes(opb.GetIndicatorsRequest, raw)
    if not msg.HasField("since"):
        raise WireError("since", "missing: name the window's first moment")
    until = msg.until.ToDatetime(tzinfo=UTC) if msg.HasField("until") else None
    return IndicatorsQuery(
        msg.since.ToDatetime(tzinfo=UTC), until, _granularity(msg.granularity or "month")
    )


def _figure_to_proto(cell: Cell, figure: Figure) -> opb.IndicatorFigure:
    period, peer, indicator, key = cell
    msg = opb.IndicatorFigure(period=period, peer=peer, indicator=indicator, key=key)
    if figure.hidden == "small":
        msg.small = True
    elif figure.hidden == "secondary":
        msg.secondary = True
    elif figure.value is None:
        msg.not_applicable = True
    else:
        msg.value = figure.value
    return msg


def _figure_from_proto(msg: opb.IndicatorFigure) -> Figure:
    which = msg.WhichOneof("figure")
    if which == "value":
        return Figure(msg.value)
    hidden: dict[str | None, Literal["small", "secondary"]] = {
        "small": "small",
        "secondary": "secondary",
    }
    if which in hidden:
        return Figure(None, hidden[which])
    return Figure(None)


def indicators_to_bytes(ind: Indicators) -> bytes:
    msg = opb.GetIndicatorsResponse(
        node=ind.node,
        since=_stamp(ind.since),
        until=_stamp(ind.until),
        granularity=ind.granularity,
        tree_size=ind.entries,
        periods=list(ind.periods),
        peers=list(ind.peers),
        figures=[_figure_to_proto(cell, figure) for cell, figure in ind.figures.items()],
    )
    return msg.SerializeToString()


def indicators_from_bytes(raw: bytes) -> Indicators:
    msg = _from_bytes(opb.GetIndicatorsResponse, raw)
    figures = {(f.period, f.peer, f.indicator, f.key): _figure_from_proto(f) for f in msg.figures}
    return Indicators(
        node=msg.node,
        since=msg.since.ToDatetime(tzinfo=UTC),
        until=msg.until.ToDatetime(tzinfo=UTC),
        granularity=_granularity(msg.granularity),
        entries=msg.tree_size,
        periods=tuple(msg.periods),
        peers=tuple(msg.peers),
        keys=keys_from(figures),
        figures=figures,
    )
