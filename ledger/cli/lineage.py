"""`ledger lineage`: which runs read an S3 object (version) and which models they made; what went into a model.

    ledger lineage s3://bucket/key [--version-id V]   the runs that read that object (version), and their models
    ledger lineage --artifact URI                     what went into a model, followed upstream
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ledger.cli.console import open_book, out, print_json, say
from ledger.errors import UsageError
from ledger.store import lineage


def lineage_command(
    uri: Optional[str] = typer.Argument(None, help="s3://bucket/key (a key ending in / is a prefix)."),
    version_id: Optional[str] = typer.Option(None, "--version-id", help="Only runs that read this version."),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="A model artifact URI (or its tree sha256): "
                                                                    "show what went into it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Which runs read an S3 object (version) and which models they made; or, with --artifact, what went into a model."""
    if bool(uri) == bool(artifact):
        raise UsageError("give an S3 object or --artifact URI, not both" if uri else "give an S3 object or --artifact",
                         "ledger lineage s3://bucket/key [--version-id V]; ledger lineage --artifact s3://…/model.tar.gz")
    book = open_book()
    if artifact:
        if version_id:
            raise UsageError("--version-id goes with an S3 object, not --artifact", "leave it out")
        result = lineage.inputs_of_artifact(book, artifact)
        if as_json:
            print_json(result)
            return
        for run in result["made_by"]:
            _print_inputs(out, run, artifact)
        return
    result = lineage.runs_that_read(book, uri, version_id)
    if as_json:
        print_json(result)
        return
    if not result["runs"]:
        what = f"{uri} (version {version_id})" if version_id else uri
        say(f"No recorded run read {what}.")
        return
    title = f"{len(result['runs'])} run(s) read {uri}" + (f" version {version_id}" if version_id else "")
    table = Table(title=title, title_justify="left")
    table.add_column("run id", no_wrap=True)
    for column in ("job, launched, by", "read", "model artifact"):
        table.add_column(column, overflow="fold")
    for row in lineage.as_rows(result):
        model = row["model_uri"] or "-"
        if row["model_tree_sha256"]:
            model += f"\ntree {row['model_tree_sha256'][:16]}…"
        who = f"{row['job_name']}\n{row['created_at'] or '-'}\n{row['created_by'] or '-'}\n{row['status'] or 'no outcome'}"
        table.add_row(*map(Text, (row["run_id"], who, row["read"], model)))
    out.print(table)
    if len(result["versions"]) > 1 and not version_id:
        say("Versions read: " + ", ".join(f"{v['version_id']} by {v['runs']} run(s)" for v in result["versions"]))


def _print_inputs(out, run: dict, artifact: str, indent: str = "") -> None:
    def line(text: str) -> None:
        out.print(indent + text, markup=False, highlight=False)

    line(f"{artifact} was made by run {run['run_id']} ({run['job_name']}), launched {run['created_at']} by "
         f"{run['created_by']}: {run['status'] or 'no outcome'}")
    if run["image"].get("stood_in"):
        line(f"  image   {run['image']['stood_in']}")
    else:
        line(f"  image   {run['image']['uri'] or '-'}  digest {run['image']['digest'] or '-'}")
    code = run["code"]
    line(f"  code    {code['repo_url'] or '-'} @ {code['commit'] or '-'}" + (f" + diff {code['diff_sha256']}"
                                                                           if code["diff_sha256"] else ""))
    for channel in run["data"]:
        line(f"  data    {channel['channel']}: {channel['uri']}  {channel['object_count']} objects, manifest "
             f"{channel['manifest_sha256'] or '-'}")
        for obj in channel["objects"][:20]:
            made = f"  <- model of run {', '.join(obj['made_by'])}" if obj.get("made_by") else ""
            line(f"            {obj['key']}  version {obj.get('version_id') or '-'}{made}")
        if len(channel["objects"]) > 20:
            line(f"            … {len(channel['objects']) - 20} more (--json lists all)")
    if run["hyperparameters"]:
        line("  params  " + ", ".join(f"{k}={v}" for k, v in run["hyperparameters"].items()))
    for gap in run["gaps"]:
        line(f"  GAP     {gap['what']}: {gap['why']}")
    for parent in run["upstream"]:
        _print_inputs(out, parent, "  an input", indent + "    ")


def register(app: typer.Typer) -> None:
    app.command("lineage")(lineage_command)
