"""The dashboard, page by page, through Streamlit's AppTest on a real SQLite ledger seeded with realistic runs.

Each test drives the real app (dashboard/app.py with its st.navigation pages) as a browser session would: set a
widget, rerun, read what is on screen. No page may show an exception, whatever the ledger holds.
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from ledger.dashboard import APP_PATH, views
from ledger.errors import NotFound, UsageError
from ledger.record import (
    CodePin,
    DataChannelPin,
    DataObject,
    EnvironmentPin,
    Gap,
    HardwarePin,
    ImagePin,
    ModelArtifact,
    Outcome,
    Pins,
    RunRecord,
    Verdict,
)
from ledger.store import browse
from ledger.store.ledger import open_ledger
from tests.test_store import tamper

TIMEOUT = 30
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
DIGEST = "sha256:" + "4f" * 32
TRAIN_KEY = "abalone/v2/train/abalone-train.csv"


# --- a realistic ledger ---------------------------------------------------------------------------------------


def _series(depth: int, rounds: int = 8) -> list[dict]:
    return [{"name": name, "step": step, "value": round(base / (1 + 0.1 * step * depth) + 1.5, 5),
             "timestamp": f"2025-03-0{depth}T10:{step:02d}:00Z"}
            for name, base in (("train:rmse", 3.0), ("validation:rmse", 3.4)) for step in range(rounds)]


def abalone_run(depth: int, *, version: str = "v1", eta: str = "0.2", gaps: list[Gap] | None = None,
                status: str = "Completed", **fields) -> RunRecord:
    """An XGBoost job on abalone as local capture records it: image by digest, a git commit, two S3 channels
    read at exact versions, 5 hyperparameters, metrics and their series, a model artifact."""
    job = fields.pop("job_name", f"abalone-xgb-d{depth}-{version}")
    hyperparameters = {"max_depth": str(depth), "eta": eta, "num_round": "40", "objective": "reg:squarederror",
                       "subsample": "0.8"}
    channels = {
        "train": DataChannelPin(uri="s3://ml-data/abalone/v2/train/", kind="S3Prefix", pinned=True, object_count=2,
                                total_bytes=191_873 + 512,
                                objects=[DataObject(key=TRAIN_KEY, version_id=f"train-{version}", etag='"9f1c"',
                                                    size=191_873),
                                         DataObject(key="abalone/v2/train/README.txt", version_id="readme-1",
                                                    etag='"77aa"', size=512)]),
        "validation": DataChannelPin(uri="s3://ml-data/abalone/v2/validation/", kind="S3Prefix", pinned=True,
                                     object_count=1, total_bytes=47_968,
                                     objects=[DataObject(key="abalone/v2/validation/abalone-validation.csv",
                                                         version_id="val-1", etag='"e0d2"', size=47_968)]),
    }
    finished = status == "Completed"
    rmse = round(2.0 + 0.11 * abs(depth - 5) + (0.05 if eta != "0.2" else 0.0), 4)
    outcome = Outcome(
        status=status, started_at="2025-03-01T10:00:00Z", ended_at="2025-03-01T10:03:00Z", billable_seconds=180,
        failure_reason=None if finished else "AlgorithmError: ExecuteUserScriptError: exit code 1",
        metrics={"train:rmse": round(rmse * 0.8, 4), "validation:rmse": rmse, "validation:mae": round(rmse * 0.75, 4)}
        if finished else {},
        model_artifact=ModelArtifact(uri=f"s3://ml-models/abalone/{job}/output/model.tar.gz",
                                     version_id=f"m-{depth}-{version}", sha256="ab" * 32,
                                     tree_sha256=f"{depth:02d}" * 32) if finished else None,
    )
    if finished:
        outcome.metric_series = _series(depth)
    request = {"TrainingJobName": job, "HyperParameters": hyperparameters,
               "AlgorithmSpecification": {"TrainingImage": f"{IMAGE}@{DIGEST}", "TrainingInputMode": "File"},
               "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 5},
               "InputDataConfig": [{"ChannelName": n, "DataSource": {"S3DataSource": {"S3Uri": p.uri}}}
                                   for n, p in channels.items()],
               "Tags": [{"Key": "team", "Value": "marine-biology"}, {"Key": "purpose", "Value": "depth-sweep"}]}
    return RunRecord(
        project=fields.pop("project", "abalone"), job_name=job, backend="local", created_by="alice@lab",
        created_at=fields.pop("created_at", f"2025-03-0{min(depth, 9)}T10:00:00.000000Z"), request=request,
        pins=Pins(
            image=ImagePin(uri=f"{IMAGE}:1.7-1", digest=DIGEST, pinned_uri=f"{IMAGE}@{DIGEST}", source="ecr"),
            code=CodePin(repo_url="git@github.com:lab/abalone.git", commit="c0ffee" * 6 + "abcd", branch="main",
                         dirty=False),
            data=channels, hyperparameters=hyperparameters,
            environment=EnvironmentPin(python="3.11.7", platform="Linux-x86_64",
                                       packages={"xgboost": "2.1.1", "pandas": "2.2.3", "numpy": "2.1.0"},
                                       fingerprint="f1" * 32),
            hardware=HardwarePin(instance_type="local", instance_count=1, volume_gb=5, vcpu=2, memory_gib=8.0),
            gaps=gaps or [],
        ),
        outcome=outcome, **fields,
    )


def seed(book) -> dict[str, RunRecord]:
    """Eight runs in two projects: a depth sweep, one with gaps, a failed one, a reproduction with a verdict,
    two SageMaker runs of another project. Returns them by a short name."""
    gaps = [Gap(what="image", why="tag 1.7-1 could not be resolved to a digest (registry unreachable)",
                fix="push the image to ECR, or pass image_uri with @sha256:…"),
            Gap(what="code", why="uncommitted changes in 2 files and no source archive",
                fix="commit, or set LEDGER_CODE_ARCHIVE=s3://bucket/prefix")]
    records = {
        "d3": abalone_run(3), "d4": abalone_run(4), "d5": abalone_run(5), "d6": abalone_run(6, eta="0.1"),
        "gappy": abalone_run(7, gaps=gaps, job_name="abalone-xgb-unpinned"),
        "failed": abalone_run(8, status="Failed", job_name="abalone-xgb-broken"),
        "housing1": abalone_run(4, project="housing", job_name="housing-lgbm-a", version="v9"),
        "housing2": abalone_run(6, project="housing", job_name="housing-lgbm-b", version="v9"),
    }
    for name in ("housing1", "housing2"):
        records[name].backend = "sagemaker"
        records[name].request["Tags"] = [{"Key": "team", "Value": "pricing"}]
    saved = dict(zip(records, book.append_many(list(records.values()))))
    repro = abalone_run(5, job_name="abalone-xgb-d5-v1-repro", reproduction_of=saved["d5"].run_id,
                        created_at="2025-03-09T11:00:00.000000Z")
    repro.outcome.metrics["validation:rmse"] = 2.0001
    repro.outcome.model_artifact.tree_sha256 = "5e" * 32
    saved["repro"] = book.append(repro)
    book.record_verdict(saved["repro"].run_id, Verdict(  # the shape ledger.run.reproduce.build_verdict gives
        result="EQUIVALENT",
        differences=[{"what": "model artifact", "original": "05" * 32, "reproduction": "5e" * 32}],
        explained_by=[{"pin": "environment", "recorded": "xgboost 2.1.1", "now": "xgboost 2.1.3"}]))
    return {name: book.get(r.run_id) for name, r in saved.items()}


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(ledger_home, monkeypatch):
    url = f"sqlite:///{ledger_home / 'ledger.db'}"
    monkeypatch.setenv("LEDGER_DB_URL", url)
    return url


@pytest.fixture
def seeded(sqlite_url):
    return seed(open_ledger())


def app() -> AppTest:
    return AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)


def on_page(at: AppTest, page: str, **query) -> AppTest:
    """Open a page the way a link does: its file, with query parameters."""
    if not at.session_state or "_first" not in at.session_state:
        at.run()
        at.session_state["_first"] = True
    at.query_params = {k: v for k, v in query.items()}
    return at.switch_page(page).run()


def no_errors(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [w.value for w in at.warning] + [s.value for s in at.success] + [e.value for e in at.error]
    parts += [c.value for c in at.code]
    return "\n".join(str(p) for p in parts)


def runs_table(at: AppTest):
    return next(df for df in at.dataframe if df.key and df.key.startswith("runs_table_")).value


def frame_with(at, *columns: str):
    """The first table on screen that has these columns (read-only tables carry no key in AppTest)."""
    found = [df.value for df in at.dataframe if set(columns) <= set(df.value.columns)]
    assert found, f"no table with columns {columns}"
    return found[0]


def tab(at: AppTest, label: str):
    return next(t for t in at.tabs if t.label.startswith(label))


# --- Runs -----------------------------------------------------------------------------------------------------


def test_runs_lists_every_run_with_badges(seeded):
    at = no_errors(app().run())
    table = runs_table(at)
    assert len(table) == 9 and set(table["run id"]) == {r.run_id for r in seeded.values()}
    row = table.set_index("job name")
    assert row.at["abalone-xgb-unpinned", "pinning"] == "▲ 2 gaps"
    assert row.at["abalone-xgb-d3-v1", "pinning"] == "● fully pinned"
    assert row.at["abalone-xgb-broken", "status"] == "✖ Failed"
    assert row.at["abalone-xgb-d5-v1-repro", "verdict"] == "≈ EQUIVALENT"
    assert row.at["abalone-xgb-d3-v1", "verdict"] == ""
    assert row.at["abalone-xgb-d4-v1", "metrics.validation:rmse"] == pytest.approx(2.11)
    assert "params.max_depth" in table.columns  # the params that vary are shown by default
    assert "Showing 1–9 of 9 matching runs" in texts(at)


@pytest.mark.parametrize("widget, value, expected", [
    ("f_projects", ["housing"], {"housing-lgbm-a", "housing-lgbm-b"}),
    ("f_statuses", ["Failed"], {"abalone-xgb-broken"}),
    ("f_text", "unpinned", {"abalone-xgb-unpinned"}),
    ("f_text", "team=pricing", {"housing-lgbm-a", "housing-lgbm-b"}),  # a tag
    ("f_where", "params.max_depth >= 6 and metrics.validation:rmse < 2.2", {"abalone-xgb-d6-v1", "housing-lgbm-b"}),
    ("f_where", "project = 'housing' and params.max_depth = '4'", {"housing-lgbm-a"}),
    ("f_only", "reproductions", {"abalone-xgb-d5-v1-repro"}),
    ("f_only", "gaps", {"abalone-xgb-unpinned"}),
])
def test_runs_filters(seeded, widget, value, expected):
    at = app().run()
    found = [w for kind in ("multiselect", "text_input", "selectbox") for w in getattr(at, kind) if w.key == widget]
    found[0].set_value(value).run()
    no_errors(at)
    assert set(runs_table(at)["job name"]) == expected


def test_runs_date_range_and_a_bad_condition(seeded):
    from datetime import date

    at = app().run()
    at.date_input(key="f_dates").set_value((date(2025, 3, 5), date(2025, 3, 6))).run()
    assert set(runs_table(at)["job name"]) == {"abalone-xgb-d5-v1", "abalone-xgb-d6-v1", "housing-lgbm-b"}
    at.text_input(key="f_where").set_value("params.max_depth ~ 3").run()
    assert not at.exception
    assert "cannot read the condition" in at.error[0].value  # said plainly; the other filters still apply
    assert len(runs_table(at)) == 3


def test_runs_sorting_and_paging(seeded):
    at = app().run()
    at.selectbox(key="sort_by").set_value("metrics.validation:rmse").run()
    at.selectbox(key="sort_order").set_value("ascending").run()
    table = runs_table(at)
    rmse = table["metrics.validation:rmse"].dropna().tolist()
    assert rmse == sorted(rmse) and table["metrics.validation:rmse"].isna().tolist()[-1]  # missing last
    at.selectbox(key="sort_by").set_value("params.max_depth").run()
    depths = [int(d) for d in runs_table(at)["params.max_depth"]]
    assert depths == sorted(depths)  # as numbers: params are text as sent
    at.selectbox(key="page_size").set_value(25).run()
    assert not at.pagination  # 9 runs: one page, no pager


def test_paging_renders_only_the_current_page(sqlite_url):
    book = open_ledger()
    book.append_many([abalone_run(3 + i % 5, job_name=f"sweep-{i:03d}", created_at=f"2025-04-01T10:{i // 60:02d}:"
                                  f"{i % 60:02d}.000000Z") for i in range(60)])
    at = no_errors(app().run())
    assert len(runs_table(at)) == 50 and at.pagination[0].num_pages == 2
    at.pagination[0].set_value(2).run()
    page_two = runs_table(at)
    assert len(page_two) == 10 and "Showing 51–60 of 60" in texts(at)


def test_selecting_runs_leads_to_compare(seeded):
    at = app().run()
    table = runs_table(at)
    at.session_state[at.session_state["runs_table_key"]] = {"selection": {"rows": [0, 1]}}
    at.run()
    chosen = table["run id"].iloc[:2].tolist()
    assert at.session_state["selected_runs"] == chosen
    assert f"ledger diff {chosen[0]} {chosen[1]}" in texts(at)
    at.button(key="compare_button").click().run()
    no_errors(at)
    assert at.title[0].value == "Compare"
    assert at.text_input(key="compare_refs").value == " ".join(chosen)
    assert at.query_params["runs"] == [",".join(chosen)] or at.query_params["runs"] == ",".join(chosen)
    # back to Runs, and Compare again: the same runs, not an empty page
    at.switch_page("page_runs.py").run()
    at.button(key="compare_button").click().run()
    assert at.text_input(key="compare_refs").value == " ".join(chosen) and len(tab(at, "Pins").dataframe) == 1


def test_selection_survives_paging_and_clears(sqlite_url):
    book = open_ledger()
    book.append_many([abalone_run(3, job_name=f"job-{i:03d}") for i in range(55)])
    at = app().run()
    first = runs_table(at)["run id"].iloc[0]
    at.session_state[at.session_state["runs_table_key"]] = {"selection": {"rows": [0]}}
    at.run()
    at.pagination[0].set_value(2).run()
    at.session_state[at.session_state["runs_table_key"]] = {"selection": {"rows": [1]}}
    at.run()
    assert at.session_state["selected_runs"][0] == first and len(at.session_state["selected_runs"]) == 2
    at.button(key="clear_button").click().run()
    assert at.session_state["selected_runs"] == []


# --- Compare --------------------------------------------------------------------------------------------------


def test_compare_highlights_differences_and_plots(seeded):
    a, b, c = seeded["d3"], seeded["d6"], seeded["d4"]
    at = no_errors(on_page(app(), "page_compare.py", runs=f"{a.run_id},{b.run_id},{c.job_name}"))
    pins = tab(at, "Pins").dataframe[0]
    frame = pins.value
    assert frame.loc["pins.hyperparameters.max_depth", "differs"]
    assert frame.loc["pins.hyperparameters.eta", "differs"]
    assert not frame.loc["pins.image.digest", "differs"]
    styles = pins.proto.arrow_data.styler.styles
    assert "rgba(255, 196, 0, 0.28)" in styles  # the differing cells are highlighted
    assert len(frame.columns) == 4  # differs + 3 runs
    outcome = tab(at, "Outcome").dataframe[0].value
    assert "outcome.metric_series" not in outcome.index  # series are plotted, not listed
    kinds = [json.loads(p.proto.spec)["data"][0]["type"] for p in at.get("plotly_chart")]
    assert kinds.count("bar") == 1 and "scatter" in kinds and "parcoords" in kinds

    at.toggle(key="only_differences").set_value(True).run()
    only = tab(at, "Pins").dataframe[0].value
    assert only["differs"].all() and "pins.hyperparameters.max_depth" in only.index
    assert "pins.image.digest" not in only.index


def test_compare_with_a_failed_run_and_unknown_refs(seeded):
    at = on_page(app(), "page_compare.py", runs=f"{seeded['failed'].run_id},{seeded['d3'].run_id},nosuchrun")
    assert not at.exception
    assert any("nosuchrun" in w.value for w in at.warning)
    outcome = tab(at, "Outcome").dataframe[0].value
    assert outcome.loc["outcome.status", "differs"]


def test_compare_many_runs_side_by_side_ten_and_plots_them_all(sqlite_url):
    book = open_ledger()
    saved = book.append_many([abalone_run(3 + i % 6, eta=f"0.{i % 3 + 1}", job_name=f"sweep-{i:02d}")
                              for i in range(12)])
    at = no_errors(on_page(app(), "page_compare.py", runs=",".join(r.run_id for r in saved)))
    assert "12 runs selected" in texts(at)
    assert len(tab(at, "Request").dataframe[0].value.columns) == 1 + 10
    assert "12 runs; axes: the hyperparameters that differ (eta, max_depth)" in texts(at) or \
        "12 runs; axes: the hyperparameters that differ (max_depth, eta)" in texts(at)


def test_compare_needs_two_runs(seeded):
    at = no_errors(on_page(app(), "page_compare.py", runs=seeded["d3"].run_id))
    assert "Pick 2 to 10 runs" in texts(at)
    at.text_input(key="compare_refs").set_value(f"{seeded['d3'].run_id} {seeded['d4'].run_id}").run()
    assert len(tab(at, "Request").dataframe[0].value.columns) == 3


# --- Run ------------------------------------------------------------------------------------------------------


def test_run_page_shows_the_whole_record(seeded):
    run = seeded["d5"]
    at = no_errors(on_page(app(), "page_run.py", run=run.run_id))
    shown = texts(at)
    assert f"ledger reproduce {run.run_id}" in shown
    assert at.subheader[0].value == run.job_name
    assert [t.label for t in at.tabs][:6] == ["Code", "Data", "Image", "Hardware", "Environment", "Outcome"]
    manifest = frame_with(at, "channel", "key", "version_id", "etag")
    assert len(manifest) == 3
    at.text_input(key="manifest_search").set_value("validation").run()
    manifest = frame_with(at, "channel", "key", "version_id", "etag")
    assert manifest["key"].tolist() == ["abalone/v2/validation/abalone-validation.csv"]
    reproductions = frame_with(at, "reproduction", "verdict")
    assert reproductions["reproduction"].tolist() == [seeded["repro"].run_id]
    assert reproductions["verdict"].tolist() == ["≈ EQUIVALENT"]
    assert not at.get("link_button")  # no MLflow run recorded


def test_run_page_gaps_failure_reproduction_and_mlflow_link(seeded, sqlite_url):
    at = no_errors(on_page(app(), "page_run.py", run=seeded["gappy"].job_name))
    gaps = frame_with(at, "what", "why", "fix")
    assert gaps["what"].tolist() == ["image", "code"] and "push the image to ECR" in gaps["fix"].iloc[0]

    at = on_page(app(), "page_run.py", run=seeded["failed"].run_id)
    assert not at.exception and "ExecuteUserScriptError" in at.error[0].value  # the failure, said plainly

    at = no_errors(on_page(app(), "page_run.py", run=seeded["repro"].run_id))
    assert "EQUIVALENT" in texts(at) and seeded["d5"].run_id in texts(at)

    open_ledger().annotate(seeded["d3"].run_id, {"mlflow_run_id": "abc123", "mlflow_experiment_id": "7",
                                                 "mlflow_tracking_uri": "http://mlflow.internal:5000"})
    at = no_errors(on_page(app(), "page_run.py", run=seeded["d3"].run_id))
    assert at.get("link_button")[0].proto.url == "http://mlflow.internal:5000/#/experiments/7/runs/abc123"


def test_run_page_offers_the_audit_report_only_when_ledger_audit_exists(seeded):
    import importlib.util

    at = no_errors(on_page(app(), "page_run.py", run=seeded["d3"].run_id))
    has_audit = importlib.util.find_spec("ledger.audit") is not None
    assert bool([d for d in at.get("download_button") if d.proto.label.startswith("Audit report")]) == has_audit


def test_the_audit_report_download_is_the_runs_html(seeded, sqlite_url):
    from ledger.dashboard import data

    html = data.audit_html(sqlite_url, seeded["d5"].run_id).decode("utf-8")
    assert "<html" in html.lower() and seeded["d5"].run_id in html


def test_run_page_unknown_run_is_a_message(seeded):
    at = on_page(app(), "page_run.py", run="NOSUCHRUN")
    assert not at.exception and "no run NOSUCHRUN" in at.error[0].value


# --- Lineage --------------------------------------------------------------------------------------------------


def test_lineage_finds_the_runs_that_read_an_object_version(seeded):
    at = no_errors(on_page(app(), "page_lineage.py"))
    at.text_input(key="lineage_uri").set_value(f"s3://ml-data/{TRAIN_KEY}")
    at.button[0].click().run()  # the form's Search button
    no_errors(at)
    found = frame_with(at, "object read", "model artifact")
    assert len(found) == 9  # every run read that key; the housing runs read another version of it
    assert "s3://ml-models/abalone/abalone-xgb-d3-v1/output/model.tar.gz" in found["model artifact"].tolist()

    at.text_input(key="lineage_version").set_value("train-v9")
    at.button[0].click().run()
    found = frame_with(at, "object read", "model artifact")
    assert set(found["job name"]) == {"housing-lgbm-a", "housing-lgbm-b"}


def test_lineage_prefix_unknown_object_and_bad_uri(seeded):
    at = no_errors(on_page(app(), "page_lineage.py", uri="s3://ml-data/abalone/v2/validation/"))
    assert len(frame_with(at, "object read", "model artifact")) == 9
    at = on_page(app(), "page_lineage.py", uri="s3://ml-data/nothing/here.csv")
    assert not at.exception and "No recorded run read" in at.warning[0].value
    at = on_page(app(), "page_lineage.py", uri="ml-data/abalone")
    assert not at.exception and "is not an S3 URI" in at.error[0].value


# --- Integrity ------------------------------------------------------------------------------------------------


def test_integrity_intact_then_tampered(seeded, sqlite_url):
    book = open_ledger()
    seq, head = book.head()
    at = no_errors(on_page(app(), "page_integrity.py"))
    assert "Intact" in at.success[0].value and head in texts(at)
    assert at.metric[0].value == str(seq)

    target = book.entries()[2]
    tamper(sqlite_url, ("UPDATE entries SET body = :b WHERE seq = 3",
                        {"b": target.body.replace('"max_depth":"5"', '"max_depth":"9"')}))
    at.button(key="verify_again").click().run()
    assert not at.exception
    assert at.error[0].value.startswith(f"TAMPERED at entry 3 (run {target.run_id})")
    bad = frame_with(at, "", "value")
    assert bad.set_index("")["value"]["seq"] == "3"

    at.text_input(key="anchor").set_value(head).run()
    assert "chain is broken" in at.warning[0].value

    tamper(sqlite_url, f"DELETE FROM entries WHERE seq = {seq}")
    at.text_input(key="anchor").set_value(head).run()
    assert any("no entry with this hash" in e.value for e in at.error)


# --- edge states ----------------------------------------------------------------------------------------------


PAGES = ("page_runs.py", "page_compare.py", "page_run.py", "page_lineage.py", "page_integrity.py")


@pytest.mark.parametrize("page", PAGES)
def test_an_empty_ledger_is_a_friendly_empty_state(sqlite_url, page):
    at = no_errors(on_page(app(), page))
    assert "ledger demo" in texts(at) or "Pick 2 to 10 runs" in texts(at)


def test_a_single_failed_run_with_gaps_renders_everywhere(sqlite_url):
    book = open_ledger()
    run = book.append(abalone_run(4, status="Failed", gaps=[Gap(what="data", why="bucket unversioned",
                                                                fix="enable versioning")]))
    for page, query in (("page_runs.py", {}), ("page_compare.py", {"runs": run.run_id}),
                        ("page_run.py", {"run": run.run_id}),
                        ("page_lineage.py", {"uri": f"s3://ml-data/{TRAIN_KEY}"}), ("page_integrity.py", {})):
        at = on_page(app(), page, **query)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not [e for e in at.error if "ExecuteUserScriptError" not in e.value], page


def test_a_new_entry_invalidates_the_cached_runs(seeded):
    at = app().run()
    assert len(runs_table(at)) == 9
    open_ledger().append(abalone_run(3, job_name="brand-new"))
    at.run()
    assert "brand-new" in set(runs_table(at)["job name"])


def test_an_unopenable_database_is_one_message(ledger_home, monkeypatch):
    monkeypatch.setenv("LEDGER_DB_URL", "postgresql://nobody@127.0.0.1:1/none")
    at = app().run()
    assert not at.exception and "cannot open the database" in at.error[0].value


# --- the pure parts and the queries, on both databases ----------------------------------------------------------


def test_browse_queries_on_sqlite_and_postgres(db_url):
    book = open_ledger()
    runs = seed(book)
    from ledger.store.lineage import runs_that_read

    hits = runs_that_read(book, f"s3://ml-data/{TRAIN_KEY}", "train-v9")["runs"]
    assert {h["job_name"] for h in hits} == {"housing-lgbm-a", "housing-lgbm-b"}
    assert sum(len(run["read"]) for run in runs_that_read(book, "s3://ml-data/abalone/v2/")["runs"]) == 9 * 3
    assert runs_that_read(book, f"s3://ml-data/{TRAIN_KEY}")["versions"][0] == {"version_id": "train-v1", "runs": 7}
    assert browse.run_ids_where(book, "params.max_depth > 6") == {runs["gappy"].run_id, runs["failed"].run_id}
    index = browse.update_tag_index(book, browse.TagIndex())
    assert index.search("PRICING") == {runs["housing1"].run_id, runs["housing2"].run_id}
    table = browse.runs_table(book)
    assert len(table) == 9 and table["metrics.validation:rmse"].dtype == "float64"
    assert table["job_name"].iloc[0] == "abalone-xgb-d5-v1-repro"  # newest first
    page = browse.runs_table(book, limit=3, offset=3)
    assert page["run_id"].tolist() == table["run_id"].iloc[3:6].tolist()
    some = browse.runs_table(book, run_ids=[runs["d3"].run_id, runs["failed"].run_id], with_params=True)
    assert set(some["params.max_depth"]) == {"3", "8"} and some["metrics.validation:rmse"].isna().sum() == 1
    found = browse.facets(book)
    assert (found.total, found.projects, found.statuses) == (9, ["abalone", "housing"], ["Completed", "Failed"])
    assert "max_depth" in found.param_keys and found.metric_keys == ["train:rmse", "validation:mae",
                                                                      "validation:rmse"]
    assert browse.param_column(book, "max_depth")[runs["d4"].run_id] == "4"
    assert browse.params_of(book, [runs["d3"].run_id])[runs["d3"].run_id]["eta"] == "0.2"
    assert browse.entry(book, 1)["seq"] == 1 and browse.seq_of_hash(book, book.head()[1]) == book.head()[0]
    d3 = runs["d3"].run_id
    assert book.resolve(d3) == d3 == book.resolve(d3.lower())
    assert book.resolve("abalone-xgb-d3-v1") == d3
    with pytest.raises(UsageError, match="names"):
        book.resolve(d3[:4])  # a prefix of every run
    with pytest.raises(NotFound):
        book.resolve("no-such-job")
    book.annotate(runs["d3"].run_id, {"tags": {"reviewed": "yes"}})
    assert index.search("reviewed") == set()
    browse.update_tag_index(book, index)  # only the new entries are read
    assert index.search("reviewed=yes") == {runs["d3"].run_id}


def test_badges_and_refs():
    assert views.gap_badge(0) == "● fully pinned" and views.gap_badge(1) == "▲ 1 gap"
    assert views.verdict_badge(None, "01J") == "◔ pending" and views.verdict_badge(None, None) == ""
    assert views.verdict_badge("DIVERGED") == "✖ DIVERGED" and views.status_badge(None) == "· unknown"
    assert views.split_refs("a, b\nc a") == ["a", "b", "c"]
    assert views.badge("✖ Failed") == ":red-badge[✖ Failed]" and views.badge("") == ""
    assert views.default_metric(["metrics.train:rmse", "metrics.validation:rmse"]) == 1


# --- `ledger dashboard` --------------------------------------------------------------------------------------------


def test_the_dashboard_command_binds_localhost_headless_without_usage_stats(ledger_home, capsys):
    from ledger.cli import main

    assert main(["dashboard", "--port", "8777", "--print-command"]) == 0
    command = capsys.readouterr().out.split()
    assert command[1:5] == ["-m", "streamlit", "run", str(APP_PATH)] and APP_PATH.exists()
    options = dict(zip(command[5::2], command[6::2]))
    assert options["--server.port"] == "8777" and options["--server.address"] == "127.0.0.1"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"
    assert main(["dashboard", "--host", "0.0.0.0", "--print-command"]) == 0
    assert "--server.address 0.0.0.0" in capsys.readouterr().out
    assert main(["dashboard", "--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err


def test_every_page_ships_beside_the_app():
    pages = [p for p in APP_PATH.read_text().split('"') if p.startswith("page_") and p.endswith(".py")]
    assert sorted(pages) == sorted(PAGES) and all((APP_PATH.parent / p).exists() for p in pages)
