"""SRE commands for the Kafka side: topics, replay, dead letters, lag.

They talk to the broker at ``HUB_KAFKA_BOOTSTRAP`` and the database of ``HUB_DATABASE_URL``
(or the embedded one); ``--json`` prints machine-readable output for scripts.
Exit codes: 0 done (or in sync), 1 a failure or drift found, 2 bad usage (a topics.yaml
error, an event model that cannot be imported, included).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from hub.cli.progress import ProgressLine, bar
from hub.engine.hub import Hub
from hub.engine.loader import load_modules
from hub.errors import HubError
from hub.logging import configure_logging
from hub.settings import KafkaSettings, mask_dsn, process_settings

T = TypeVar("T")

JsonOut = Annotated[bool, typer.Option("--json", help="machine-readable output")]
TopicsFile = Annotated[Path | None, typer.Option("--file", help="topics.yaml to use")]


def _kafka(file: Path | None = None) -> tuple[KafkaSettings, str]:
    every = process_settings()
    settings = every.kafka
    if settings.bootstrap and "HUB_KAFKA_BOOTSTRAP" in every.origins:
        from hub.runtime.kafka import without_producer_ids

        without_producer_ids(settings.bootstrap)  # the dev mode's embedded Tansu
    if file is not None:
        settings = settings.model_copy(update={"topics_file": file})
    if not settings.bootstrap:
        raise HubError("HUB_KAFKA_BOOTSTRAP is not set: which broker should this talk to?")
    return settings, settings.bootstrap


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    configure_logging("warning")
    from hub.runtime.topics import TopicsFileError

    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except TopicsFileError as exc:  # the file is wrong, not the broker: exit 2
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _print(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        human()


def one_line(text: str, width: int) -> str:
    """``text`` on one line (a pydantic message spans several), cut at a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    cut = flat[:width - 1].rsplit(" ", 1)[0] if " " in flat[:width - 1] else flat[:width - 1]
    return cut + "…"


def _bar(label: str, line: ProgressLine) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (stdout stays for results)."""

    def show(done: int, total: int) -> None:
        line.draw(f"{label:10} {bar(done, total)} {done}/{total}")
        if done >= total:
            line.end()

    return show


def add_kafka_commands(app: typer.Typer) -> None:
    topics_app = typer.Typer(help="Topics of topics.yaml on the broker.", no_args_is_help=True)
    dlq_app = typer.Typer(help="Dead-lettered events.", no_args_is_help=True)
    app.add_typer(topics_app, name="topics")
    app.add_typer(dlq_app, name="dlq")

    def reconcile_cmd(create: bool, file: Path | None, as_json: bool) -> None:
        from hub.runtime.admin import reconcile
        from hub.runtime.topics import load_topics

        async def go() -> Any:
            settings, bootstrap = _kafka(file)
            topics = load_topics(settings.topics_file, settings.topic_prefix)
            topics.import_models()
            report = await reconcile(topics, settings, bootstrap, create=create)
            return report, [] if create else await _schema_checks(topics, settings)

        report, schemas = _run(go)

        def human() -> None:
            for name in report.created:
                typer.echo(f"created   {name}")
            for name in report.missing:
                typer.echo(f"missing   {name}")
            for d in report.drift:
                typer.echo(f"drift     {d.topic}: {d.setting} declared {d.declared}, "
                           f"broker has {d.actual}")
            for name in report.in_sync:
                typer.echo(f"in sync   {name}")
            for c in schemas:
                word = ("unchecked" if not c.checked else "schema ok" if c.compatible
                        else "INCOMPATIBLE")
                typer.echo(f"{word:9} {c.topic} (subject {c.subject}): {c.detail}")

        data = report.to_dict()
        if schemas:
            data["schemas"] = [c.to_dict() for c in schemas]
        _print(data, as_json, human)
        if report.drift or report.missing or any(not c.compatible for c in schemas):
            raise typer.Exit(1)

    async def _schema_checks(topics: Any, settings: KafkaSettings) -> list[Any]:
        """The registry's verdict on each declared model of a topic in a registry format."""
        from hub.runtime.schema_check import check_models
        from hub.runtime.schema_registry import SchemaRegistry

        if not any(t.registry_subject and t.event for t in topics):
            return []
        registry = SchemaRegistry.from_settings(settings)
        if registry is None:
            raise HubError("topics in a registry format (avro, json-schema) are declared: "
                           "set HUB_SCHEMA_REGISTRY_URL to check their models")
        try:
            return await check_models(topics, registry)
        finally:
            await registry.aclose()

    @topics_app.command("apply")
    def topics_apply(file: TopicsFile = None, as_json: JsonOut = False) -> None:
        """Create missing topics; report drift (exit 1 if any). Safe to repeat."""
        reconcile_cmd(True, file, as_json)

    @topics_app.command("check")
    def topics_check(file: TopicsFile = None, as_json: JsonOut = False) -> None:
        """Report missing topics, drift, and models the schema registry finds incompatible
        with their subject (exit 1 if any)."""
        reconcile_cmd(False, file, as_json)

    @topics_app.command("asyncapi")
    def topics_asyncapi(
        file: TopicsFile = None,
        output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
        fmt: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
    ) -> None:
        """Write the AsyncAPI 3.0 document of every topic (stdout by default)."""
        import yaml

        from hub.runtime.asyncapi import build_asyncapi
        from hub.runtime.subscriber import SUBSCRIBERS
        from hub.runtime.topics import load_topics

        try:
            settings = process_settings().kafka
            topics = load_topics(file or settings.topics_file, settings.topic_prefix)
            load_modules(settings.subscribers)
            doc = build_asyncapi(topics, SUBSCRIBERS.with_prefix(settings.topic_prefix),
                                 bootstrap=settings.bootstrap or "",
                                 registry_url=mask_dsn(settings.schema_registry_url or ""))
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        text = (json.dumps(doc, indent=2) if fmt == "json"
                else yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            typer.echo(f"wrote {output}")

    @app.command("publish")
    def publish(
        topic: Annotated[str, typer.Argument(help="a topic of topics.yaml")],
        file: Annotated[Path, typer.Argument(help="a JSON event, a JSON array, or JSON lines")],
        key_field: Annotated[str, typer.Option("--key-field", help="event field used as key")]
        = "id",
        no_validate: Annotated[bool, typer.Option("--no-validate")] = False,
    ) -> None:
        """Publish events from a file, validated against the topic's model first, in the
        topic's format (framed for the schema registry, or as CloudEvents)."""
        import uuid

        from hub import wire as h
        from hub.runtime.formats import EventFormats
        from hub.runtime.kafka import start_producer
        from hub.runtime.schema_registry import SchemaRegistry
        from hub.runtime.topics import load_topics

        try:
            text = file.read_text()
        except OSError as exc:
            typer.echo(f"error: {file}: {exc.strerror}", err=True)
            raise typer.Exit(1) from None
        try:
            data = json.loads(text)
            events = data if isinstance(data, list) else [data]
        except ValueError:
            try:
                events = [json.loads(line) for line in text.splitlines() if line.strip()]
            except ValueError as exc:
                typer.echo(f"error: {file}: not JSON, a JSON array or JSON lines: {exc}",
                           err=True)
                raise typer.Exit(1) from None

        async def go() -> int:
            settings, bootstrap = _kafka()
            prefix = settings.topic_prefix
            name = topic if topic.startswith(prefix) else prefix + topic
            spec = load_topics(settings.topics_file, prefix)[name]
            model = None if no_validate else spec.event_model()
            for i, event in enumerate(events):
                if model is not None:
                    try:
                        model.model_validate(event)
                    except Exception as exc:
                        raise HubError(f"{file}: event {i} does not match {spec.event}: {exc}"
                                       ) from None
            formats = None
            if EventFormats.applies(spec):  # framed for the registry, or a CloudEvent
                formats = EventFormats(SchemaRegistry.from_settings(settings)
                                       if spec.registry_subject else None)
            producer = await start_producer(settings, bootstrap)
            try:
                for event in events:
                    key = event.get(key_field) if isinstance(event, dict) else None
                    value = json.dumps(event)
                    version = {h.SCHEMA_VERSION: str(spec.schema_version)}
                    if formats is None:
                        raw, headers = value.encode(), [(k, v.encode())
                                                        for k, v in version.items()]
                    else:
                        event_id = str(key) if key is not None else uuid.uuid4().hex
                        raw, headers = await formats.encode(spec, value, version, event_id)
                    await producer.send_and_wait(
                        name, raw, key=str(key).encode() if key is not None else None,
                        headers=headers)
            finally:
                await producer.stop()
                if formats is not None and formats.registry is not None:
                    await formats.registry.aclose()
            return len(events)

        n = _run(go)
        typer.echo(f"published {n} event(s) to {topic}")

    @app.command("lag")
    def lag(as_json: JsonOut = False, file: TopicsFile = None) -> None:
        """Consumer lag of the deployment's group, per topic and partition."""
        from hub.runtime.admin import consumer_lag
        from hub.runtime.subscriber import SUBSCRIBERS

        async def go() -> Any:
            settings, bootstrap = _kafka(file)
            load_modules(settings.subscribers)
            subscribed = SUBSCRIBERS.with_prefix(settings.topic_prefix).topics()
            return await consumer_lag(settings, bootstrap, subscribed)

        rows = _run(go)
        data = [{"topic": r.topic, "partition": r.partition, "committed": r.committed,
                 "end": r.end, "lag": r.lag} for r in rows]

        def human() -> None:
            typer.echo(f"{'topic':30} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}")
            for d in data:
                typer.echo(f"{d['topic']:30} {d['partition']:>4} {d['committed']!s:>10} "
                           f"{d['end']:>10} {d['lag']:>8}")

        _print(data, as_json, human)

    @app.command("replay")
    def replay_cmd(
        topic: Annotated[str, typer.Option("--topic", help="topic to re-feed")],
        from_timestamp: Annotated[str | None, typer.Option(
            "--from-timestamp", help="ISO time; no zone = UTC")] = None,
        from_offset: Annotated[int | None, typer.Option("--from-offset")] = None,
        by_duration: Annotated[str | None, typer.Option(
            "--by-duration", help="ISO duration back from now, e.g. P1DT2H")] = None,
        to_timestamp: Annotated[str | None, typer.Option("--to-timestamp")] = None,
        to_offset: Annotated[int | None, typer.Option("--to-offset")] = None,
        partition: Annotated[list[int] | None, typer.Option("--partition")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
        new_runs: Annotated[bool, typer.Option(
            "--new-runs", help="start fresh executions, ids marked as replays")] = False,
        as_json: JsonOut = False,
    ) -> None:
        """Re-feed a stretch of a topic to its subscribers (skips what already ran)."""
        from hub.runtime.replay import Position, parse_duration, parse_timestamp, replay
        from hub.runtime.subscriber import SUBSCRIBERS
        from hub.runtime.topics import load_topics

        chosen = [x for x in (from_timestamp, from_offset, by_duration) if x is not None]
        if len(chosen) != 1:
            typer.echo("error: give exactly one of --from-timestamp, --from-offset, "
                       "--by-duration", err=True)
            raise typer.Exit(2)
        if to_timestamp is not None and to_offset is not None:
            typer.echo("error: give at most one of --to-timestamp, --to-offset", err=True)
            raise typer.Exit(2)

        line = ProgressLine()

        def progress(tp: str, first: int, pos: int, last: int) -> None:
            line.draw(f"{tp:28} {bar(pos - first, last - first)} {pos}/{last}", key=tp)

        async def go() -> Any:
            settings, bootstrap = _kafka()
            hs = process_settings().engine
            load_modules(hs.modules)
            load_modules(settings.subscribers)
            start = Position(
                offset=from_offset,
                timestamp=parse_timestamp(from_timestamp) if from_timestamp else None,
                ago=parse_duration(by_duration) if by_duration else None)
            stop = None
            if to_timestamp is not None or to_offset is not None:
                stop = Position(offset=to_offset, timestamp=parse_timestamp(to_timestamp)
                                if to_timestamp else None)
            topics = load_topics(settings.topics_file, settings.topic_prefix)
            with line:
                async with Hub(settings=hs, execute=False) as hub:
                    return await replay(hub, topics, SUBSCRIBERS.with_prefix(settings.topic_prefix),
                                        settings, bootstrap, topic, start, stop,
                                        partitions=partition, dry_run=dry_run,
                                        new_runs=new_runs, progress=None if as_json else progress)

        report = _run(go)

        def human() -> None:
            verb = "would start" if dry_run else "started"
            count = len(report.would_start) if dry_run else len(report.started)
            typer.echo(f"{report.events} events: {verb} {count}, skipped {len(report.skipped)}"
                       f" (already ran), rejected {len(report.rejected)}"
                       + (f"; replay id {report.replay_id}" if report.replay_id else ""))
            shown = 50  # per kind; --json lists them all

            def more(items: list[Any], what: str) -> None:
                if len(items) > shown:
                    typer.echo(f"  ... and {len(items) - shown} more {what} not listed "
                               "(--json lists every one)")

            starts = report.would_start if dry_run else report.started
            for key in starts[:shown]:
                typer.echo(f"  {verb}: {key}")
            more(starts, "to start" if dry_run else "started")
            for key in report.skipped[:shown]:
                typer.echo(f"  skip: {key}")
            more(report.skipped, "skipped")
            for r in report.rejected[:shown]:
                reason = one_line(str(r["error"]), 200)
                typer.echo(f"  rejected: partition {r['partition']} offset {r['offset']} "
                           f"({r['stage']}): {reason}")
            more(report.rejected, "rejected")

        _print(report.to_dict(), as_json, human)

    @dlq_app.command("list")
    def dlq_list(topic: Annotated[str | None, typer.Option(
            "--topic", help="a dead-letter topic (default: all of topics.yaml)")] = None,
                 cursor: Annotated[str | None, typer.Option(
                     "--cursor", help="where to go on: the `next` a previous page printed "
                                      "(needs --topic)")] = None,
                 limit: Annotated[int, typer.Option(
                     "--limit", min=1, max=200, help="dead letters per topic at most")] = 50,
                 as_json: JsonOut = False) -> None:
        """Dead letters with their reason and original position, a bounded page per topic
        (oldest first); `next` continues a topic's page."""
        from hub.runtime.deadletters import dead_letter_topics, read_dead_letters
        from hub.runtime.topics import load_topics

        if cursor and not topic:
            typer.echo("error: --cursor continues one topic: give its --topic too", err=True)
            raise typer.Exit(2)

        async def go() -> Any:
            settings, bootstrap = _kafka()
            topics = load_topics(settings.topics_file, settings.topic_prefix)
            names = [topic] if topic else dead_letter_topics(topics)
            async with Hub(settings=process_settings().engine, execute=False) as hub:
                return [await read_dead_letters(hub, settings, bootstrap, name, cursor=cursor,
                                                limit=limit) for name in names]

        pages = _run(go)
        items = [d.summary() for p in pages for d in p.letters]
        following: dict[str, str | None] = {p.topic: p.next for p in pages}

        def human() -> None:
            if items:
                typer.echo(f"{'REF':32} {'FROM':30} {'STAGE':14} REASON")
            for d in items:
                flag = " (redriven)" if d["redriven"] else ""
                where = f"{d['topic']}/{d['partition']}@{d['offset']}"
                reason = one_line(f"{d['error']}: {d['message']}", 160)
                typer.echo(f"{d['ref']:32} {where:30} {d['stage']:14} {reason}{flag}")
            typer.echo(f"{len(items)} dead letters (hub dlq show REF for the whole reason)")
            for name, nxt in following.items():
                if nxt:
                    typer.echo(f"more: hub dlq list --topic {name} --cursor {nxt}")

        _print({"items": items, "next": following}, as_json, human)

    @dlq_app.command("show")
    def dlq_show(ref: Annotated[str, typer.Argument(help="dlq-topic/partition/offset")]) -> None:
        """One dead letter, whole: headers and payload (read alone, by its position)."""
        from hub.runtime.deadletters import parse_ref, read_letters

        try:
            parse_ref(ref)
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

        async def go() -> Any:
            settings, bootstrap = _kafka()
            async with Hub(settings=process_settings().engine, execute=False) as hub:
                return await read_letters(hub, settings, bootstrap, [ref])

        found = _run(go)
        if ref not in found:
            typer.echo(f"error: no dead letter {ref}", err=True)
            raise typer.Exit(1)
        typer.echo(json.dumps(found[ref].detail(), indent=2, default=str))

    @dlq_app.command("redrive")
    def dlq_redrive(
        refs: Annotated[list[str] | None, typer.Argument(help="dlq-topic/partition/offset")]
        = None,
        all_of: Annotated[str | None, typer.Option(
            "--all", help="every not yet redriven letter of this dead-letter topic (walked "
                          "a page at a time, up to its end when the command started)")] = None,
        to_subscriber: Annotated[bool, typer.Option(
            "--to-subscriber", help="hand it to its subscriber instead of its topic")] = False,
        as_json: JsonOut = False,
    ) -> None:
        """Send dead letters back to their topic (or subscriber); each redrive is recorded."""
        from hub.runtime.deadletters import (
            PAGE_LIMIT,
            end_offsets,
            parse_ref,
            read_dead_letters,
            read_letters,
            redrive,
        )
        from hub.runtime.subscriber import SUBSCRIBERS
        from hub.runtime.topics import load_topics

        if not refs and not all_of:
            typer.echo("error: name dead letters, or --all DLQ_TOPIC", err=True)
            raise typer.Exit(2)
        try:
            for ref in refs or []:
                parse_ref(ref)
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if len(refs or []) > PAGE_LIMIT:
            typer.echo(f"error: at most {PAGE_LIMIT} dead letters at once (or --all)", err=True)
            raise typer.Exit(2)

        async def go() -> Any:
            settings, bootstrap = _kafka()
            hs = process_settings().engine
            load_modules(hs.modules)
            load_modules(settings.subscribers)
            topics = load_topics(settings.topics_file, settings.topic_prefix)
            subs = SUBSCRIBERS.with_prefix(settings.topic_prefix)
            line = ProgressLine()
            shown = None if as_json else _bar("redrive", line)
            with line:
                async with Hub(settings=hs, execute=False) as hub:
                    if refs:
                        found = await read_letters(hub, settings, bootstrap, list(refs))
                        missing = sorted(set(refs) - set(found))
                        if missing:
                            return missing
                        return await redrive(hub, topics, subs, settings, bootstrap,
                                             [found[r] for r in dict.fromkeys(refs)],
                                             to_subscriber=to_subscriber, progress=shown)
                    assert all_of is not None
                    # a page at a time, up to where the topic ended at the start: a letter that
                    # fails again lands past that end and is not redriven twice by one command
                    upto = await end_offsets(settings, bootstrap, all_of)
                    done: list[dict[str, Any]] = []
                    cursor: str | None = None
                    while True:
                        page = await read_dead_letters(hub, settings, bootstrap, all_of,
                                                       cursor=cursor, upto=upto)
                        chosen = [d for d in page.letters if not d.redriven]
                        if chosen:
                            done += await redrive(hub, topics, subs, settings, bootstrap, chosen,
                                                  to_subscriber=to_subscriber, progress=shown)
                        if page.next is None:
                            return done
                        cursor = page.next

        done = _run(go)
        if done and isinstance(done[0], str):
            typer.echo(f"error: no dead letter {', '.join(done)}", err=True)
            raise typer.Exit(1)

        def human() -> None:
            for d in done:
                typer.echo(f"redriven {d['ref']} -> {d['target']}")

        _print(done, as_json, human)
