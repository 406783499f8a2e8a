"""The ``assistant`` console script: parses arguments, calls the library, prints.

Domain errors (:class:`assistant.errors.AssistantError`) become one-line messages and exit
status 1; nothing here holds logic of its own.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from assistant.login.cli_auth import login, needs
from assistant.cli_quiet import quiet_libraries
from assistant.config import get_settings
from assistant.errors import AssistantError
from assistant.plugins import COMMANDS_GROUP, register_commands
from assistant.operations.permissions import private_umask
from assistant.words import clean_text

if TYPE_CHECKING:
    from assistant.bootstrap import Library
    from assistant.chat.service import ChatService, Reply
    from assistant.engines.generation import GenerationParams
    from assistant.storage import StoredMessage
    from assistant.storage.conversations import SourceRecord

HELP_IN_CHAT = """Commands: /up [comment]  /down [comment]  rate the last answer
          /continue  go on with an answer cut at the token limit
          /new  start a new conversation   /list  list conversations
          /open ID  reopen a conversation  /quit  leave (or Ctrl-D)
Ctrl-C while an answer streams stops it (the partial answer is kept)."""


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AssistantError as err:
            raise click.ClickException(str(err)) from err

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:
            if PLUGINS or ctx.resilient_parsing:
                raise
            # No entry point added commands: an install made before they were declared.
            raise click.UsageError(
                f"{err.format_message()} No commands from entry points ({COMMANDS_GROUP}) are "
                "installed, so train, models, eval and data are missing: install the package "
                "again (pip install -e ., or make setup).", ctx,
            ) from err


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("-u", "--user", envvar="ASSISTANT_USER", metavar="NAME",
              help="Log in as NAME when login is on (ASSISTANT_AUTH=password); the password "
              "is prompted, or read from ASSISTANT_PASSWORD.")
def main(verbose: int, user: str | None) -> None:
    """Self-hosted chat assistant with retrieval and RLHF tooling.

    Settings come from ASSISTANT_* environment variables (ASSISTANT_MODEL,
    ASSISTANT_DATA_DIR, ASSISTANT_DATABASE_URL, ...); see the README.
    """
    private_umask()  # the data, backups and exports written from here are the owner's only
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# -- db ----------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema (default: to the newest revision)."""
    from assistant.storage import Database, upgrade

    settings = get_settings()
    database = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    now = upgrade(database, revision)
    click.echo(f"Database {database.where} is at revision {now}.")


@db.command("current")
def db_current() -> None:
    """Show the schema revision of the database and the newest one available."""
    from assistant.storage import Database, current_revision, head_revision

    settings = get_settings()
    database = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    click.echo(f"{database.where}: revision {current_revision(database)} (head {head_revision()})")


@db.command("copy")
@click.option("--to", "to_url", required=True, metavar="URL",
              help="The database to copy into, e.g. postgresql+psycopg://user:password@host/assistant.")
@click.option("--from", "from_url", metavar="URL",
              help="The database to copy from (default: the current one, ASSISTANT_DATABASE_URL "
                   "or the SQLite file in the data folder).")
@click.option("--force", is_flag=True,
              help="Replace the rows the target already holds (in the same transaction).")
def db_copy(to_url: str, from_url: str | None, force: bool) -> None:
    """Copy every row (ids and vectors kept) into another database, e.g. from SQLite to
    PostgreSQL. One transaction on the target: interrupted, it leaves the target as it was."""
    from sqlalchemy.engine import make_url

    from assistant.storage import Database
    from assistant.storage.copy import copy_database

    settings = get_settings()
    source = Database(from_url or settings.resolved_database_url, settings.db_busy_timeout_s)
    target = Database(to_url, settings.db_busy_timeout_s)
    try:
        report = copy_database(source, target, force=force)
    finally:
        source.dispose()
        target.dispose()
    rows = sum(report.counts.values())
    click.echo(f"Copied {rows:,} rows from {report.source} to {report.target} in "
               f"{report.seconds:.1f} s{' (its earlier rows replaced)' if report.replaced else ''}; "
               "every table's count matches:")
    for name, n in report.counts.items():
        click.echo(f"  {name}: {n:,}")
    shown = make_url(to_url).render_as_string(hide_password=True)
    click.echo(f"To use it, set ASSISTANT_DATABASE_URL={shown} (with its password) for the app "
               "and every `assistant` command, and restart the app. The index and versions "
               f"folders in {settings.data_dir} stay as they are; the source database is left in place.")


# -- chat --------------------------------------------------------------------------------------
@main.command()
@click.option("-c", "--conversation", "conversation_id", type=int, help="Continue this conversation.")
@click.option("-t", "--temperature", type=click.FloatRange(0, 2), help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True))
@click.option("-n", "--max-new-tokens", type=click.IntRange(1, 4096))
@click.option("-s", "--system", "system_prompt", help="System prompt.")
@click.option("--repetition-penalty", type=click.FloatRange(1, 2),
              help="Repetition control (1 = off); default: the setting.")
def chat(conversation_id: int | None, temperature: float | None, top_p: float | None,
         max_new_tokens: int | None, system_prompt: str | None,
         repetition_penalty: float | None) -> None:
    """Chat in the terminal, on the same service and database as the web app."""
    from assistant.bootstrap import build_chat_service
    from assistant.cpu import cpu_info
    from assistant.engines.generation import GenerationParams, describe, setup_of

    settings = get_settings()
    user = login()
    quiet_libraries()
    click.echo("Loading the model...", err=True)
    service = build_chat_service(settings).for_owner(user)
    d = service.default_params()
    params = GenerationParams(
        temperature=d.temperature if temperature is None else temperature,
        top_p=d.top_p if top_p is None else top_p,
        max_new_tokens=max_new_tokens or d.max_new_tokens,
        system_prompt=d.system_prompt if system_prompt is None else system_prompt,
        repetition_penalty=d.repetition_penalty if repetition_penalty is None else repetition_penalty,
    )
    for notice in service.notices:
        click.echo(f"Note: {notice}", err=True)
    click.echo(f"{describe(service.generator)}. Type /help for commands.", err=True)
    setup = setup_of(service.generator)
    click.echo(f"Engine: {setup + '; ' if setup else ''}CPU: {cpu_info().line()}", err=True)
    session = _TerminalChat(service, params, conversation_id)
    if conversation_id is not None:
        conv = service.store.get_conversation(conversation_id)
        click.echo(f"Continuing #{conv.id}: {conv.title}", err=True)
        _print_history(service, conv.id)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        except UnicodeDecodeError as err:
            click.echo(f"Error: that line is not valid text ({err.encoding}: {err.reason}); "
                       "type it again.", err=True)
            continue
        try:
            if not session.handle(clean_text(line)):  # invalid UTF-8 let through by surrogateescape
                return
        except AssistantError as err:
            click.echo(f"Error: {err}", err=True)


@dataclass
class _TerminalChat:
    """The terminal chat's state between lines: the conversation and the last answer
    (what /up, /down and /continue act on)."""

    service: ChatService
    params: GenerationParams
    conversation_id: int | None = None
    last_answer_id: int | None = None

    def handle(self, line: str) -> bool:
        """Act on one line (a command or a message); False: the user quits."""
        service = self.service
        cmd, _, arg = line.strip().partition(" ")
        if cmd in ("/quit", "/exit"):
            return False
        if cmd == "/help":
            click.echo(HELP_IN_CHAT)
        elif cmd == "/new":
            self.conversation_id, self.last_answer_id = None, None
            click.echo("New conversation.")
        elif cmd == "/list":
            for c in service.store.list_conversations(chats_only=True):
                click.echo(f"#{c.id:<5} {c.updated_at:%Y-%m-%d %H:%M}  {c.title}")
        elif cmd == "/open":
            if not arg.strip().isdigit():
                click.echo("Usage: /open ID, a conversation number (/list shows them).", err=True)
                return True
            conv = service.store.get_conversation(int(arg))
            self.conversation_id, self.last_answer_id = conv.id, None
            _print_history(service, conv.id)
        elif cmd in ("/up", "/down", "/continue") and self.last_answer_id is None:
            click.echo("Nothing to continue yet." if cmd == "/continue" else "Nothing to rate yet.")
        elif cmd in ("/up", "/down"):
            service.store.rate(self.last_answer_id, 1 if cmd == "/up" else -1, arg or None)
            click.echo("Rating saved.")
        elif cmd == "/continue":
            _print_reply(service.continue_answer(self.last_answer_id), "assistant (continued)> ")
        else:
            reply = service.send(self.conversation_id, line, self.params)
            self.conversation_id = reply.conversation_id
            if (message := _print_reply(reply)) is not None:
                self.last_answer_id = message.id
        return True


# -- documents ---------------------------------------------------------------------------------
def _library(repair: bool = True) -> Library:
    from assistant.bootstrap import open_database, open_library

    settings = get_settings()
    library = open_library(settings, open_database(settings), repair=repair)
    for notice in library.notices:
        click.echo(f"Note: {notice}", err=True)
    return library


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@needs("upload")
def ingest(paths: tuple[Path, ...]) -> None:
    """Add documents (files, or folders searched recursively) to the searchable library.

    Supported: .txt .md .pdf .html .docx .csv .json. The same content twice is skipped; a
    changed file with a stored name replaces the old version. Failures are listed with
    their reason and the other files still go in (exit status 1 if any failed).
    """
    from tqdm import tqdm

    from assistant.documents.ingest import find_files

    missing = [p for p in paths if not p.exists()]
    for p in missing:
        click.echo(f"Error: {p}: no such file or folder", err=True)
    library = _library()
    files = find_files([p for p in paths if p.exists()])
    results = library.ingestor.ingest_paths(
        files, progress=lambda xs: tqdm(xs, desc="Ingesting", unit="file", disable=len(files) < 2)
    )
    for r in results:
        click.echo(("  " if r.ok else "✗ ") + r.describe(), err=not r.ok)
    ok = sum(r.ok for r in results)
    click.echo(f"{ok} of {len(results)} files ingested or already present; "
               f"{library.store.chunk_count()} chunks in the library.")
    if missing or ok < len(results):
        sys.exit(1)


@main.command()
@click.argument("query")
@click.option("-k", "--top-k", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical"]), help="Default: setting.")
@click.option("-d", "--document", "document_ids", type=int, multiple=True, help="Only these document ids.")
@needs()
def search(query: str, top_k: int, mode: str | None, document_ids: tuple[int, ...]) -> None:
    """Search the documents without chatting: ranked chunks with their scores."""
    quiet_libraries()
    click.echo("Loading the embedding model and the index...", err=True)
    library = _library()
    hits = library.retriever.search(
        query, k=top_k, document_ids=list(document_ids) or None, mode=mode
    )
    if not hits:
        click.echo("No matching chunks." if library.store.chunk_count() else
                   "No documents yet: add some with `assistant ingest PATH`.")
    for n, hit in enumerate(hits, start=1):
        where = f", {hit.location}" if hit.location else ""
        ranks = f"dense #{hit.dense_rank or '-'}, lexical #{hit.lexical_rank or '-'}"
        click.echo(f"[{n}] {hit.score:.4f}  {hit.document_name}{where}  ({ranks})")
        click.echo("    " + " ".join(hit.text.split())[:300])


@main.group()
def documents() -> None:
    """List and delete stored documents."""


@documents.command("list")
@needs()
def documents_list() -> None:
    from assistant.bootstrap import open_database
    from assistant.storage.documents import DocumentStore

    docs = DocumentStore(open_database(get_settings())).list_documents()
    if not docs:
        click.echo("No documents yet: add some with `assistant ingest PATH`.")
    for d in docs:
        click.echo(f"#{d.id:<5} {d.created_at:%Y-%m-%d %H:%M}  {d.size_bytes / 1024:8.1f} KB  "
                   f"{d.chunk_count:5} chunks  {d.name}")


@documents.command("delete")
@click.argument("document_id", type=int)
@needs("upload")
def documents_delete(document_id: int) -> None:
    """Delete a document; its chunks leave the index."""
    library = _library()
    name = library.store.get(document_id).name
    library.ingestor.delete(document_id)
    click.echo(f"Deleted #{document_id} {name}.")


@main.group()
def index() -> None:
    """The FAISS vector index (a cache of the vectors stored in the database)."""


@index.command("check")
@needs()
def index_check() -> None:
    """Compare the index with the database (exit status 1 when they disagree)."""
    library = _library(repair=False)
    r = library.sync
    click.echo(f"database: {r.in_db} chunks; index: {r.in_index} "
               f"({library.index.kind}); missing {r.missing}, stale {r.stale}"
               + ("; embedded with another model" if r.model_mismatch else ""))
    if not r.ok:
        click.echo("Run `assistant index rebuild` to repair.")
        sys.exit(1)


@index.command("rebuild")
@click.option("--reembed", is_flag=True, help="Embed all chunks again (after changing the model).")
@needs("maintain")
def index_rebuild(reembed: bool) -> None:
    """Rebuild the index from the vectors stored in the database."""
    from assistant.documents.index_sync import reembed as reembed_all

    library = _library(repair=False)
    if reembed:
        from tqdm import tqdm

        n = reembed_all(library.store, library.index, library.embedder,
                        progress=lambda docs: tqdm(docs, desc="Re-embedding", unit="document"))
    else:
        n = library.index.rebuild(library.store.iter_vectors())
        library.index.save()
    click.echo(f"Index rebuilt: {n} chunks ({library.index.kind}).")


from assistant.login.cli_auth import users as _users  # noqa: E402
from assistant.operations.cli_ops import register as _register_ops  # noqa: E402

main.add_command(_users)
_register_ops(main)
#: Names of the entry points that added commands (train, models, eval, data come from one).
PLUGINS = register_commands(main)


def _print_reply(reply: Reply, label: str = "assistant> ") -> StoredMessage | None:
    """Stream an answer (Ctrl-C stops it), then say if the token limit cut it and list its
    sources; returns the stored message (None if nothing was stored)."""
    for notice in reply.notices:
        click.echo(f"[{notice}]", err=True)
    click.echo(label, nl=False)
    try:
        for chunk in reply:
            click.echo(chunk, nl=False)
    except KeyboardInterrupt:
        reply.close()
        click.echo(" [stopped]", nl=False)
    click.echo()
    message = reply.message
    if message is not None:
        if message.record is not None and message.record.cut_at_limit:
            click.echo(CUT_NOTICE)
        _print_sources(message)
    return message


#: Under an answer the token limit cut, in the terminal.
CUT_NOTICE = "[cut at the token limit: /continue goes on with it]"


def _print_history(service: ChatService, conversation_id: int) -> None:
    from assistant.chat.service import SAYS_NO_DOCUMENT
    from assistant.storage.conversations import RETRIEVAL

    for m in service.store.messages(conversation_id):
        rating = {1: " [👍]", -1: " [👎]"}.get(m.rating, "") if m.role == "assistant" else ""
        cut = " [cut at the token limit]" if m.record is not None and m.record.cut_at_limit else ""
        click.echo(f"{'you' if m.role == 'user' else 'assistant'}> {m.content}{cut}{rating}")
        if m.record is not None and m.record.retrieval in SAYS_NO_DOCUMENT:
            click.echo(f"[{RETRIEVAL[m.record.retrieval]}]")
        _print_sources(m)


def _print_sources(m: StoredMessage) -> None:
    """The sources under an answer, as the app lists them: the cited ones with their text
    (and who cited them: the model with its own [n], or attribution), then the others the
    model was shown."""
    from assistant.chat.answer_modes import quotes, unverified_quotes
    from assistant.chat.citations import explicit_citations

    def where(src: SourceRecord) -> str:
        return f"{src.document_name}{f' · {src.location}' if src.location else ''}"

    cited = [src for src in m.sources if src.cited]
    others = [src for src in m.sources if not src.cited]
    explicit = explicit_citations(m.content, len(m.sources))
    quoted = {n for _, n in quotes(m.content)}
    for src in cited:
        text = " ".join(src.text.split())
        how = ("quoted" if src.rank in quoted else "cited by the model" if src.rank in explicit
               else "attributed, not cited by the model")
        click.echo(f"  [{src.rank}] {where(src)} ({how}): {text[:200]}{'…' if len(text) > 200 else ''}")
        for sentence in src.evidence_text:
            click.echo(f"      evidence: \"{' '.join(sentence.split())}\"")
    for quote, n in unverified_quotes(m.content, [src.text for src in m.sources]):
        click.echo(f"  [not a quote: source {n} does not say \"{quote}\" word for word]")
    if others:
        label = "Also shown to the model" if cited else "Sources shown to the model"
        click.echo(f"  {label}: " + "; ".join(f"[{src.rank}] {where(src)}" for src in others))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
