"""``assistant data ...``: export feedback as TRL datasets, import public preference data.

    assistant data export --kind preference --out out/pref
    assistant data export --kind kto --format hf --out out/kto --since 2026-01-01 --tag inaccurate
    assistant data import hh-rlhf path/to/hh_rlhf_harmless_test.jsonl
    assistant data import squad path/to/dev-v2.0.json --limit 200
    assistant data synth --limit 100 --per-chunk 3 --teacher-url http://gpu-box:8000/v1
    assistant data on-policy --limit 200
    assistant data export --kind preference --origin imported --out out/grounded

Thin: parses, calls :mod:`alignment.export` / :mod:`alignment.importers`, prints. Domain
errors become one-line messages and exit status 1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from alignment.export import FORMATS, KINDS, SOURCE_FILTERS, ExportOptions, export, summarize, write_export
from alignment.importers import import_hh_rlhf
from assistant.login.cli_auth import needs
from assistant.storage.origins import ORIGIN_FILTERS

if TYPE_CHECKING:
    from alignment.synth import SynthReport
    from assistant.storage import Database

MALFORMED_SHOWN = 20


def _open_database() -> Database:
    from assistant.bootstrap import open_database
    from assistant.config import get_settings

    return open_database(get_settings())


class _Date(click.ParamType):
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` in UTC. A bare date given to --until
    includes that whole day."""

    name = "date"

    def __init__(self, end_of_day: bool = False) -> None:
        self.end_of_day = end_of_day

    def convert(self, value: str | datetime, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM", param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        if self.end_of_day and len(value.strip()) == 10:
            parsed += timedelta(days=1)
        return parsed


# Domain errors become one-line messages in the `assistant` group this is added to.
@click.group()
def data() -> None:
    """Training data: export feedback for TRL, import public preference data."""


@data.command("export")
@click.option("--kind", type=click.Choice(KINDS), default="preference", show_default=True,
              help="preference (DPO, reward model), kto (thumbs) or sft (good answers).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Folder to write (new, empty, or an earlier export, which is replaced).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
              help="jsonl: train.jsonl + test.jsonl; hf: a datasets save_to_disk folder.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Share of conversations held out for testing.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--since", type=_Date(), help="Answers made on or after this date (UTC).")
@click.option("--until", type=_Date(end_of_day=True), help="Answers made up to this date (UTC).")
@click.option("--model-version", "model_versions", multiple=True,
              help="Only answers of this model version (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only rows rated with any of these tags (repeatable).")
@click.option("--source", type=click.Choice(SOURCE_FILTERS), default="all", show_default=True,
              help="chats (from the app), imports (e.g. hh-rlhf) or all.")
@click.option("--origin", type=click.Choice(ORIGIN_FILTERS), default="all", show_default=True,
              help="feedback (chats), imported (hh-rlhf, SQuAD), synthetic (made from the library) or all.")
@click.option("--grounded", is_flag=True,
              help="Only grounded rows: SQuAD / synthetic examples and answers shown sources.")
@click.option("--mask-pii", is_flag=True, help="Replace e-mail addresses and phone numbers.")
@needs("export")
def data_export(kind: str, out: Path, fmt: str, test_fraction: float, seed: int,
                since: datetime | None, until: datetime | None, model_versions: tuple[str, ...],
                tags: tuple[str, ...], source: str, origin: str, grounded: bool, mask_pii: bool) -> None:
    """Export the feedback in the database as a TRL dataset (conversational format)."""
    options = ExportOptions(
        test_fraction=test_fraction, seed=seed, since=since, until=until,
        model_versions=tuple(model_versions), tags=tuple(tags), source=source, origin=origin,
        grounded=grounded, mask_pii=mask_pii,
    )
    result = export(_open_database(), kind, options)
    path = write_export(result, out, fmt)
    for line in summarize(result.report):
        click.echo(line)
    click.echo(f"Wrote {path}")


@data.group("import")
def data_import() -> None:
    """Import public preference data as conversations with a chosen answer."""


@data_import.command("hh-rlhf")
@click.argument("file", type=click.Path(path_type=Path))
@needs("import")
def data_import_hh(file: Path) -> None:
    """Import Anthropic hh-rlhf pairs (JSONL of {"chosen", "rejected"}). A file imported
    again adds nothing; malformed lines are listed and the rest goes in."""
    report = import_hh_rlhf(_open_database(), file)
    click.echo(f"{file.name}: {report.pairs_in} pairs read, {report.imported} imported, "
               f"{report.duplicates} duplicates skipped (already imported), "
               f"{len(report.malformed)} malformed.")
    for bad in report.malformed[:MALFORMED_SHOWN]:
        click.echo(f"  {bad}", err=True)
    if len(report.malformed) > MALFORMED_SHOWN:
        click.echo(f"  ... and {len(report.malformed) - MALFORMED_SHOWN} more", err=True)


@data_import.command("squad")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--documents/--no-documents", default=True, show_default=True,
              help="Add the articles to the library as documents (skipped when already there).")
@click.option("--examples/--no-examples", default=True, show_default=True,
              help="Turn the questions into grounded examples.")
@click.option("--title", "titles", multiple=True, help="Only the article with this title (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), help="At most N questions (a seeded sample).")
@click.option("--unanswerable-share", type=click.FloatRange(0, 1),
              help="At most this share of v2's unanswerable questions in the sample [all kept].")
@click.option("--quote", is_flag=True,
              help="The reference answers quote the source's sentence that holds the answer, word "
              "for word with its [n], after the short answer (as the quoted answer mode shows).")
@click.option("--calibration", is_flag=True,
              help="Leave about 30% of the paragraphs (the same ones on every run) out of the examples: "
              "`assistant models calibrate VERSION --grounded-file FILE` asks their questions.")
@needs("import")
def data_import_squad(file: Path, documents: bool, examples: bool, titles: tuple[str, ...],
                      limit: int | None, unanswerable_share: float | None, quote: bool,
                      calibration: bool) -> None:
    """Import a SQuAD v1.1 / v2.0 file: articles become documents, questions become grounded
    examples (the chat's prompt with the sources retrieval finds; the gold answer citing its
    source, with --quote the sentence that holds it quoted, or "The documents do not say."
    when none holds it). Imported again, a question already there is skipped."""
    from alignment.squad import import_squad
    from assistant.bootstrap import open_library
    from assistant.config import get_settings

    settings = get_settings()
    db = _open_database()
    library = open_library(settings, db)
    report = import_squad(db, library, file, settings.generation.system_prompt, documents=documents,
                          examples=examples, titles=titles, limit=limit,
                          unanswerable_share=unanswerable_share, quote=quote, calibration=calibration)
    click.echo(f"{file.name} (SQuAD {report.version}): {report.articles} articles, "
               f"{report.questions} questions.")
    for line in report.documents:
        click.echo(f"  document {line}")
    if examples:
        click.echo(
            f"  {report.imported} grounded examples imported of {report.picked} questions: "
            f"{report.answerable} answered with a citation, {report.unanswerable} unanswerable and "
            f"{report.not_retrieved} whose answer retrieval did not find (both taught to abstain); "
            f"{report.duplicates} already imported, {report.span_not_in_context} skipped "
            "(answer not in its paragraph).")
        if calibration:
            click.echo(f"  {report.calibration_questions} questions of {report.calibration_paragraphs} "
                       "paragraphs left out for `assistant models calibrate`.")


@data.command("synth")
@click.option("--version", "version", help="Version that writes the questions (default: the active one).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="At most N chunks this run.")
@click.option("--per-chunk", type=click.IntRange(min=1), default=1, show_default=True,
              help="Up to K questions a chunk: the first greedy, the others sampled.")
@click.option("--document", "documents", multiple=True, metavar="NAME",
              help="Only the chunks of this document (as `assistant documents list` names it); "
                   "repeatable.")
@click.option("--teacher-url", metavar="URL",
              help="An OpenAI-compatible server (its /v1 URL; e.g. vLLM serving a bigger model) "
                   "writes the questions instead of a version.")
@click.option("--teacher-model", metavar="NAME",
              help="The teacher's served model (default: the first it lists).")
@click.option("--teacher-key", envvar="ASSISTANT_TEACHER_API_KEY", metavar="KEY",
              help="The teacher's API key, if it wants one [env: ASSISTANT_TEACHER_API_KEY].")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@needs("import")
def data_synth(version: str | None, limit: int, per_chunk: int, documents: tuple[str, ...],
               teacher_url: str | None, teacher_model: str | None, teacher_key: str | None,
               batch_size: int) -> None:
    """Grounded examples from the library's documents, without gold data: the model writes
    questions and short answers per chunk through the chat's engine; only pairs whose answer
    is in the chunk word for word (and whose question is a question not giving it away, and
    not one the chunk already got) are kept, then grounded with the product's retrieval.
    Resumes where a stopped run ended. --teacher-url: a server's model (e.g. a bigger one on
    vLLM) writes them instead."""
    from alignment.answering import answering
    from alignment.synth import MAX_NEW_TOKENS, TRIED_FILE, chunks_of, synthesize
    from alignment.teacher import reworded
    from assistant.bootstrap import open_library, open_registry
    from assistant.config import get_settings
    from assistant.engines.generation import GenerationParams
    from assistant.versions import BASE_VERSION

    if teacher_url and version:
        raise click.UsageError("--version and --teacher-url are exclusive: a version of the "
                               "chat's model or the teacher writes the questions.")
    if not teacher_url and (teacher_model or teacher_key):
        raise click.UsageError("--teacher-model and --teacher-key need --teacher-url.")
    settings = get_settings()
    db = _open_database()
    library = open_library(settings, db)
    chunks_of(library, documents)  # an empty library or an unknown name: before the model loads
    registry = open_registry(settings, db)
    generator = None
    if teacher_url:
        from alignment.teacher import build_teacher

        generator = build_teacher(settings, teacher_url, teacher_model, teacher_key, batch_size)
        version = BASE_VERSION  # the teacher's served model
        written_by = f"teacher {generator.model_id}"
        click.echo(f"The teacher ({generator.model_id}) writes the questions.")
    else:
        version = version or registry.active()
        registry.get(version)
    with answering(settings, registry, {version}, generator=generator) as models:
        if not teacher_url:
            written_by = f"{models.generator.model_id} version {version}"

        def generate(prompts: list, params: GenerationParams) -> list[str]:
            return models.generate(version, prompts, MAX_NEW_TOKENS, batch_size, params=params)

        answer = reworded(generate, teacher_url) if teacher_url else generate
        report = synthesize(
            db, library, answer, settings.generation.system_prompt,
            state=settings.data_dir / TRIED_FILE, limit=limit, batch_size=batch_size,
            per_chunk=per_chunk, documents=documents, written_by=written_by)
    _synth_summary(report)


def _synth_summary(report: SynthReport) -> None:
    dropped = ", ".join(f"{k} {v}" for k, v in sorted((report.dropped or {}).items())) or "none"
    click.echo(f"{report.tried} chunks tried ({report.tried_before} before, of {report.chunks}), "
               f"{report.attempts} questions asked: {report.kept} grounded examples kept "
               f"({report.kept_share:.0%} of the questions), {report.duplicates} duplicates; "
               f"dropped: {dropped}.")


@data.command("on-policy")
@click.option("--version", "version", help="Version that answers (default: the active one).")
@click.option("--limit", type=click.IntRange(min=1), help="At most N examples this run.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--repetition-penalty", type=click.FloatRange(1.0, 2.0),
              help="Repetition penalty of the answers (default: the chat's, generation.repetition_penalty).")
@needs("import")
def data_on_policy(version: str | None, limit: int | None, batch_size: int, max_new_tokens: int,
                   repetition_penalty: float | None) -> None:
    """The active model answers the grounded examples through the chat's engine; each wrong,
    uncited or non-abstaining answer becomes the rejected side of a preference pair. A
    stopped run keeps its pairs; the next one resumes."""
    from alignment.on_policy import run
    from assistant.config import get_settings

    report = run(get_settings(), _open_database(), version=version, limit=limit,
                 batch_size=batch_size, max_new_tokens=max_new_tokens,
                 repetition_penalty=repetition_penalty)
    why = ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items())) or "none"
    click.echo(f"{report.version}: answered {report.answered} grounded examples "
               f"({report.done_before} done before, of {report.examples}): {report.rejected} pairs "
               f"made (rejected: {why}), {report.kept} answers good; greedy, repetition penalty "
               f"{report.repetition_penalty:g}.")
    if not report.examples:
        click.echo("No grounded examples: import some with `assistant data import squad FILE`.")


def register(main: click.Group) -> None:
    """Entry point (``assistant.commands``): adds ``data`` to the ``assistant`` script."""
    main.add_command(data)
