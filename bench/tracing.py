"""What tracing costs one event in the worker, at a sampling ratio, beside tracing off.

Runs the per-record tracing calls of the ingest path (``hub.tracing.consuming`` around
``hub.tracing.starting``, as the consumer and ``Hub.start`` make them) ``--events`` times with
the hub's sampler (``parentbased_traceidratio`` at ``--ratio``) and a batch span processor
whose exporter drops what it is given, then with tracing off. The export itself (protobuf
encoding and the HTTP post of the sampled spans) runs on the SDK's thread and is left to
``bench/ingest.py --trace-ratio``, which measures the whole worker against a real Jaeger.

Prints one JSON line on stdout.

    python bench/tracing.py [--events 200000] [--ratio 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from hub import tracing
from hub.tracing_sampler import PrimedIds, StatementsInTraces


class _Dropped(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _per_event_us(events: int) -> float:
    headers = {"event-id": "e"}
    started = time.process_time()
    for offset in range(events):
        with tracing.consuming("orders.order.placed", offset % 8, offset, "k", "on-order",
                               "hub", headers, "e"):
            tracing.starting({"kind": "event"}, "fulfil-order", "x", f"order:{offset}")
    return (time.process_time() - started) / events * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--ratio", type=float, default=0.01)
    args = ap.parse_args()
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(args.ratio)
    off = [_per_event_us(args.events) for _ in range(3)]
    exporter = _Dropped()
    provider = TracerProvider(sampler=StatementsInTraces(), id_generator=PrimedIds())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing.install(provider)
    try:
        on = [_per_event_us(args.events) for _ in range(3)]
    finally:
        tracing.uninstall()
        provider.shutdown()
    print(json.dumps({
        "bench": "tracing", "events": args.events, "ratio": args.ratio,
        "off_cpu_us_per_event": round(min(off), 2), "on_cpu_us_per_event": round(min(on), 2),
        "added_cpu_us_per_event": round(min(on) - min(off), 2),
        "spans_exported": exporter.spans, "expected_about": round(3 * args.events * args.ratio * 2),
        "note": "min of 3 rounds; process CPU time, so load elsewhere matters less",
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
