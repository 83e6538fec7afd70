"""`ledger export` and `ledger sign-model` (issue 17): each format checked by its own project's library, the DSSE
signature by a verifier written here from the DSSE spec, the model signature by model-signing's own command.

The runs are real: a local run made by `ledger run` and its reproduction by `ledger reproduce` (IDENTICAL), made
once for the module in their own LEDGER_HOME. Exports append facts to those runs; each test asserts its own.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import inspect
import io
import json
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from ledger.cli import main
from ledger.record import RunRecord
from ledger.store.ledger import open_ledger
from tests.conftest import git, make_workspace

BIN = Path(sys.executable).parent  # model_signing, installed beside this Python
TRAIN = (  # a model of three files, one in a folder and one executable, so that subjects are more than one
    "import os, stat\n"
    "rows = open(os.path.join(os.environ['SM_CHANNEL_TRAIN'], 'rows.csv')).read().split()\n"
    "print(f'epoch 0 loss: {1.0 / len(rows):.5f}')\n"
    "model = os.environ['SM_MODEL_DIR']\n"
    "open(os.path.join(model, 'model.txt'), 'w').write(str(rows))\n"
    "os.makedirs(os.path.join(model, 'weights'))\n"
    "open(os.path.join(model, 'weights', 'layer-0.bin'), 'wb').write(bytes(range(256)) * 64)\n"
    "open(os.path.join(model, 'serve.sh'), 'w').write('#!/bin/sh\\necho serve\\n')\n"
    "os.chmod(os.path.join(model, 'serve.sh'), 0o755)\n")


def _isolate(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("LEDGER_HOME", str(home))
    for name in ("LEDGER_DB_URL", "LEDGER_MLFLOW_URI", "MLFLOW_TRACKING_URI", "LEDGER_STRICT", "LEDGER_DATA_PIN"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in __import__("os").environ if n.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)  # the exporting machine's OpenLineage settings must not reach the events


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A completed local run and its IDENTICAL reproduction, made with `ledger run` and `ledger reproduce`."""
    root = tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as patch:
        _isolate(patch, root / "home")
        project = make_workspace(root / "project")
        (project / "src" / "train.py").write_text(TRAIN)
        git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "a model of three files")
        patch.chdir(project)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["run", "src/train.py", "--channel", "train=data", "--metric", "loss=loss: ([0-9.]+)",
                         "--hp", "epochs=3", "--job-name", "exported"]) == 0
            run_id = open_ledger().runs()["run_id"][0]
            assert main(["reproduce", run_id]) == 0
        frame = open_ledger().runs()
        repro_id = frame[frame["reproduction_of"] == run_id]["run_id"].iloc[0]
    return SimpleNamespace(root=root, home=root / "home", project=project, run_id=run_id, repro_id=repro_id)


@pytest.fixture
def runs(made, monkeypatch, tmp_path):
    """The module's runs, with LEDGER_HOME pointing at them and a fresh working directory."""
    _isolate(monkeypatch, made.home)
    monkeypatch.chdir(tmp_path)
    return made


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def record_of(run_id: str) -> RunRecord:
    return open_ledger().get(run_id)


def archive_files(record: RunRecord) -> dict[str, str]:
    """{path: sha256} of the regular files in the run's model archive, read here with tarfile."""
    path = Path(record.outcome.model_artifact.uri.removeprefix("file://"))
    with tarfile.open(path) as tar:
        return {m.name.removeprefix("./"): hashlib.sha256(tar.extractfile(m).read()).hexdigest()
                for m in tar if m.isfile()}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An Ed25519 pair and an EC P-256 pair made by `ledger audit keygen`, and a second Ed25519 pair."""
    folder = tmp_path_factory.mktemp("keys")
    with contextlib.redirect_stdout(io.StringIO()):
        for name, algorithm in (("ed", "ed25519"), ("other", "ed25519"), ("ec", "ecdsa-p256")):
            assert main(["audit", "keygen", str(folder / f"{name}.pem"), "--algorithm", algorithm]) == 0
    return SimpleNamespace(**{name: folder / f"{name}.pem" for name in ("ed", "other", "ec")})


# --- DSSE, as its spec (secure-systems-lab/dsse, protocol.md and envelope.md) defines it ------------------------


def spec_pae(payload_type: str, body: bytes) -> bytes:
    """PAE(type, body) = "DSSEv1" + SP + LEN(type) + SP + type + SP + LEN(body) + SP + body, LEN the byte length
    as ASCII decimal without leading zeros."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 " + str(len(kind)).encode("ascii") + b" " + kind + b" " + str(len(body)).encode("ascii") \
        + b" " + body


def spec_b64decode(text: str) -> bytes:
    """Signers may use standard or URL-safe base64; a verifier must accept either."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def spec_verify(envelope: dict, public_key) -> dict:
    """The spec's verification: decode, check a signature over PAE(payloadType, payload) with the key, reject
    an unsupported payloadType, parse the payload. Raises on any failure."""
    from cryptography.exceptions import InvalidSignature

    body = spec_b64decode(envelope["payload"])
    message = spec_pae(envelope["payloadType"], body)
    for signature in envelope["signatures"]:
        try:
            public_key.verify(spec_b64decode(signature["sig"]), message)
            break
        except InvalidSignature:
            continue
    else:
        raise ValueError("no signature verifies")
    if envelope["payloadType"] != "application/vnd.in-toto+json":
        raise ValueError("unsupported payloadType")
    return json.loads(body)


def public_key_of(path: Path):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_public_key(Path(f"{path}.pub").read_bytes())


def test_spec_pae_counts_bytes_not_characters():
    from ledger.audit.dsse import build_pae

    assert spec_pae("t\u00e9", b"a b") == b"DSSEv1 3 t\xc3\xa9 3 a b"  # the type's UTF-8 bytes; spaces kept
    assert build_pae("t\u00e9", b"a b") == spec_pae("t\u00e9", b"a b")


# --- in-toto and SLSA, with in-toto-attestation's models ----------------------------------------------------


def parse_statement(statement: dict):
    """Parse strictly into in-toto-attestation's Statement (an unknown field fails), validate it, and parse a
    provenance predicate into its SLSA Provenance v1 model with the reference validator's required fields."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    parsed = json_format.ParseDict(statement, statement_pb2.Statement())
    Statement.copy_from_pb(parsed).validate()
    descriptors = list(parsed.subject)
    if parsed.predicate_type == "https://slsa.dev/provenance/v1":
        provenance = json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
        assert provenance.build_definition.build_type and provenance.run_details.builder.id
        assert provenance.build_definition.HasField("external_parameters")
        descriptors += [*provenance.build_definition.resolved_dependencies, *provenance.run_details.byproducts]
    for descriptor in descriptors:
        ResourceDescriptor.copy_from_pb(descriptor).validate()
        assert descriptor.uri or descriptor.digest or descriptor.content, "in-toto v1: a descriptor names something"
    return parsed


def read_bundle(path: Path, key_path: Path) -> list[dict]:
    return [spec_verify(json.loads(line), public_key_of(key_path)) for line in path.read_text().splitlines()]


def test_slsa_provenance_is_signed_valid_in_toto_and_names_every_file_and_dependency(runs, keys, capsys):
    code, out, _ = cli(capsys, "export", runs.run_id, "--format", "slsa", "--sign", str(keys.ed), "-o", "p.jsonl")
    assert code == 0 and "signed by key" in out
    [statement] = read_bundle(Path("p.jsonl"), keys.ed)
    parse_statement(statement)
    record = record_of(runs.run_id)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"

    archive, *files = statement["subject"]
    assert archive["digest"]["sha256"] == record.outcome.model_artifact.sha256
    assert {s["name"]: s["digest"]["sha256"] for s in files} == archive_files(record)
    assert {"model.txt", "weights/layer-0.bin", "serve.sh"} == {s["name"] for s in files}

    build = statement["predicate"]["buildDefinition"]
    assert build["externalParameters"]["request"] == record.request  # as sent: integers stay integers
    assert build["externalParameters"]["request"]["ResourceConfig"]["InstanceCount"] == 1
    assert build["internalParameters"]["sdk"]["sagemaker-ledger"] and build["internalParameters"]["environment"]
    dependencies = {d["name"]: d for d in build["resolvedDependencies"]}
    assert dependencies["source"]["digest"] == {"gitCommit": record.pins.code.commit}
    assert dependencies["source-archive"]["digest"] == {"sha256": record.pins.code.source_archive.sha256}
    assert dependencies["channel:train"]["digest"] == {"sha256": record.pins.data["train"].manifest_sha256}
    rows = record.pins.data["train"].objects[0]
    assert dependencies["channel:train/rows.csv"]["uri"] == f"ledger-cas://sha256/{rows.etag}"
    assert dependencies["environment"]["digest"] == {"sha256": record.pins.environment.fingerprint}
    details = statement["predicate"]["runDetails"]
    assert details["metadata"]["invocationId"] == record.job_name  # a local run has no ARN
    assert details["metadata"]["startedOn"].endswith("Z") and details["metadata"]["finishedOn"].endswith("Z")
    assert details["builder"]["id"] == "https://sagemaker-ledger.dev/builders/local/v1"


def test_a_reproduction_exports_its_provenance_and_a_verdict_statement(runs, keys, capsys):
    code, _, _ = cli(capsys, "export", runs.repro_id, "--format", "slsa", "--sign", str(keys.ed), "-o", "r.jsonl")
    assert code == 0
    provenance, verdict = read_bundle(Path("r.jsonl"), keys.ed)
    for statement in (provenance, verdict):
        parse_statement(statement)
    reproduction, original = record_of(runs.repro_id), record_of(runs.run_id)
    assert verdict["predicateType"] == "https://sagemaker-ledger.dev/attestations/reproduction-verdict/v1"
    assert verdict["subject"][0]["digest"]["sha256"] == reproduction.outcome.model_artifact.sha256
    assert verdict["subject"] == provenance["subject"]
    assert verdict["predicate"]["original"]["runId"] == runs.run_id
    assert verdict["predicate"]["original"]["model"]["digest"]["sha256"] == original.outcome.model_artifact.sha256
    assert verdict["predicate"]["result"] == reproduction.verdict.result == "IDENTICAL"


def test_a_tampered_payload_or_another_key_fails_verification(runs, keys, capsys):
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    assert cli(capsys, "export", runs.run_id, "--format", "slsa", "--sign", str(keys.ed), "-o", "p.jsonl")[0] == 0
    envelope = json.loads(Path("p.jsonl").read_text())
    assert spec_verify(envelope, public_key_of(keys.ed))["subject"]
    # a second implementation agrees: securesystemslib's DSSE envelope, the spec authors' own library
    key = SSlibKey.from_crypto(public_key_of(keys.ed), keyid=envelope["signatures"][0]["keyid"])
    assert Envelope.from_dict(copy.deepcopy(envelope)).verify([key], 1)

    payload = base64.b64decode(envelope["payload"]).replace(b'"IDENTICAL"', b'"DIVERGED"').replace(
        b'"InstanceCount":1', b'"InstanceCount":2')
    tampered = dict(envelope, payload=base64.b64encode(payload).decode())
    with pytest.raises(ValueError, match="no signature verifies"):
        spec_verify(tampered, public_key_of(keys.ed))
    with pytest.raises(ValueError, match="no signature verifies"):
        spec_verify(envelope, public_key_of(keys.other))
    retyped = dict(envelope, payloadType="application/json")  # the type is signed too
    with pytest.raises(ValueError, match="no signature verifies"):
        spec_verify(retyped, public_key_of(keys.ed))

    Path("tampered.jsonl").write_text(json.dumps(tampered) + "\n")
    code, _, err = cli(capsys, "audit", "verify", "tampered.jsonl", "--key", f"{keys.ed}.pub")
    assert code == 3 and "envelope 1" in err and err.count("\n") == 1
    code, out, _ = cli(capsys, "audit", "verify", "p.jsonl", "--key", f"{keys.ed}.pub")
    assert code == 0 and "Signature OK" in out


def test_without_a_key_the_envelope_is_unsigned_and_verifiers_refuse_it(runs, keys, capsys):
    code, out, _ = cli(capsys, "export", runs.run_id, "--format", "slsa")
    envelope = json.loads(out)
    assert code == 0 and envelope["signatures"] == []
    parse_statement(json.loads(base64.b64decode(envelope["payload"])))
    with pytest.raises(ValueError):
        spec_verify(envelope, public_key_of(keys.ed))


# --- OpenLineage, with openlineage-python's classes and serializer -----------------------------------------------


def facet_classes() -> dict[str, type]:
    """Every facet class of openlineage-python (and the ledger's own), by the name its schemaURL ends with."""
    import openlineage.client.facet_v2 as library

    from ledger.audit.exports import openlineage_events as ours

    modules = [module for module in vars(library).values() if inspect.ismodule(module)] + [ours]
    return {cls.__name__: cls for module in modules for cls in vars(module).values()
            if isinstance(cls, type) and hasattr(cls, "_get_schema")}


def rebuild_event(event: dict):
    """An event read back into openlineage-python's classes (the client has no deserializer): each facet into the
    class its schemaURL names, the ledger's custom ones included."""
    from openlineage.client import event_v2
    from openlineage.client.facet_v2 import tags_run

    classes = facet_classes()

    def facets(raw: dict | None) -> dict:
        built = {}
        for name, value in (raw or {}).items():
            value = dict(value)
            schema, producer = value.pop("_schemaURL"), value.pop("_producer")
            if name == "tags":
                value["tags"] = [tags_run.TagsRunFacetFields(**t) for t in value["tags"]]
            built[name] = classes[schema.rsplit("/", 1)[-1]](**value, producer=producer)
            assert built[name]._schemaURL == schema
        return built

    return event_v2.RunEvent(
        eventType=event_v2.RunState(event["eventType"]), eventTime=event["eventTime"], producer=event["producer"],
        run=event_v2.Run(runId=event["run"]["runId"], facets=facets(event["run"].get("facets"))),
        job=event_v2.Job(namespace=event["job"]["namespace"], name=event["job"]["name"],
                         facets=facets(event["job"].get("facets"))),
        inputs=[event_v2.InputDataset(namespace=d["namespace"], name=d["name"], facets=facets(d.get("facets")),
                                      inputFacets=facets(d.get("inputFacets"))) for d in event.get("inputs", [])],
        outputs=[event_v2.OutputDataset(namespace=d["namespace"], name=d["name"], facets=facets(d.get("facets")))
                 for d in event.get("outputs", [])])


def check_2_0_2(event: dict) -> None:
    """What OpenLineage 2-0-2 requires of a RunEvent (openlineage-python ships no JSON schema to check with)."""
    assert event["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    assert event["producer"].startswith("https://") and event["eventTime"].endswith("Z")
    assert uuid.UUID(event["run"]["runId"]).version == 7
    assert event["job"]["namespace"] and event["job"]["name"]
    for holder in [event["run"], event["job"], *event.get("inputs", []), *event.get("outputs", [])]:
        for group in ("facets", "inputFacets", "outputFacets"):
            for facet in (holder.get(group) or {}).values():
                assert facet["_producer"] and facet["_schemaURL"].startswith("https://")


def test_openlineage_events_are_written_by_the_file_transport_and_read_back(runs, capsys):
    from openlineage.client.serde import Serde
    from ulid import ULID

    assert openlineage_package_ships_no_schema()
    code, _, _ = cli(capsys, "export", runs.run_id, runs.repro_id, "--format", "openlineage", "-o", "events.jsonl")
    assert code == 0
    events = [json.loads(line) for line in Path("events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "START", "COMPLETE"]
    for event in events:
        check_2_0_2(event)
        assert Serde.to_dict(rebuild_event(event)) == event  # read back through the library's own serializer
    start, complete, _, repro = events
    record = record_of(runs.run_id)
    run_uuid = str(ULID.from_str(runs.run_id).to_uuid7(compliant=True))  # python-ulid's own ULID -> UUIDv7
    assert start["run"]["runId"] == complete["run"]["runId"] == run_uuid
    assert start["job"] == complete["job"] and repro["job"]["name"] == start["job"]["name"] == "exported"
    assert repro["run"]["facets"]["sagemakerLedger_run"]["reproductionOfRunUuid"] == run_uuid
    assert repro["run"]["facets"]["sagemakerLedger_run"]["verdict"] == "IDENTICAL"
    [channel] = complete["inputs"]
    assert channel["facets"]["version"]["datasetVersion"] == record.pins.data["train"].manifest_sha256
    assert [o["key"] for o in channel["facets"]["sagemakerLedger_objects"]["objects"]] == ["rows.csv"]
    [model] = complete["outputs"]
    assert model["facets"]["sagemakerLedger_artifact"]["sha256"] == record.outcome.model_artifact.sha256
    assert "environmentVariables" not in complete["run"]["facets"]  # nothing of the exporting machine


def openlineage_package_ships_no_schema() -> bool:
    import openlineage.client

    return not list(Path(openlineage.client.__file__).parent.rglob("*.json"))


def test_openlineage_events_are_posted_to_a_lineage_server(runs, capsys):
    import http.server
    import threading

    received = []

    class Lineage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Lineage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code, out, _ = cli(capsys, "export", runs.run_id, "--format", "openlineage", "--to", url, "--json")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert code == 0
    assert [path for path, _ in received] == ["/api/v1/lineage", "/api/v1/lineage"]
    assert [event["eventType"] for _, event in received] == ["START", "COMPLETE"]
    sent = b"".join(json.dumps(event, sort_keys=True).encode() + b"\n" for _, event in received)
    assert json.loads(out)["sha256"] == hashlib.sha256(sent).hexdigest()


# --- CycloneDX, with cyclonedx-python-lib's strict validator ------------------------------------------------------


def validate_cyclonedx(text: str):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)


def test_cyclonedx_bom_is_strictly_valid_and_points_at_the_provenance(runs, keys, capsys):
    assert cli(capsys, "export", runs.run_id, "--format", "slsa", "--sign", str(keys.ed), "-o", "out/p.jsonl")[0] == 0
    code, _, _ = cli(capsys, "export", runs.run_id, "--format", "cyclonedx", "-o", "out/bom.json")
    text = Path("out/bom.json").read_text()
    assert code == 0 and validate_cyclonedx(text) is None
    bom, record = json.loads(text), record_of(runs.run_id)
    assert bom["specVersion"] == "1.6"
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"] == [{"alg": "SHA-256", "content": record.outcome.model_artifact.sha256}]
    [attestation] = [r for r in model["externalReferences"] if r["type"] == "attestation"]
    assert attestation["url"] == "p.jsonl"  # beside the BOM, as they travel together
    assert attestation["hashes"][0]["content"] == hashlib.sha256(Path("out/p.jsonl").read_bytes()).hexdigest()
    card = model["modelCard"]
    assert {m["type"]: float(m["value"]) for m in card["quantitativeAnalysis"]["performanceMetrics"]} == \
        record.outcome.metrics
    assert {"name": "sagemaker-ledger:hyperparameter:epochs", "value": "3"} in card["properties"]
    [data] = [c for c in bom["components"] if c["type"] == "data"]
    assert card["modelParameters"]["datasets"] == [{"ref": data["bom-ref"]}]
    assert data["data"][0]["type"] == "dataset" and data["version"] == record.pins.data["train"].manifest_sha256
    libraries = {c["purl"] for c in bom["components"] if c["type"] == "library"}
    # the packages of the environment the job ran in (a local job's own, issue 15), each a library
    assert {f"pkg:pypi/{name}@{version}" for name, version in record.pins.environment.packages.items()} <= libraries
    assert "xgboost" in record.pins.environment.packages

    # strict: what CycloneDX 1.6 has no field for, or the wrong type, is refused by the same validator
    bom["metadata"]["component"]["modelCard"]["hyperparameters"] = {"epochs": "3"}
    assert validate_cyclonedx(json.dumps(bom)) is not None


# --- SageMaker Model Card, with the SageMaker Python SDK and CreateModelCard (moto's server) ----------------------


def test_model_card_content_is_taken_by_the_sdk_and_create_model_card(runs, aws, capsys, monkeypatch):
    code, out, _ = cli(capsys, "export", runs.run_id, "--format", "model-card")
    content = json.loads(out)
    assert code == 0
    details = content["training_details"]["training_job_details"]
    record = record_of(runs.run_id)
    assert {m["name"]: m["value"] for m in details["training_metrics"]} == record.outcome.metrics
    assert {"name": "epochs", "value": "3"} in details["hyper_parameters"]
    assert details["training_datasets"] == [record.pins.data["train"].uri]
    # the SDK's own model card classes decode the content (their schema limits and types), and send it
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    import boto3
    import sagemaker
    from sagemaker.model_card import ModelCard

    session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"))
    ModelCard(name="exported-model", status="Draft", sagemaker_session=session, **content).create()
    described = boto3.client("sagemaker", region_name="us-east-1").describe_model_card(ModelCardName="exported-model")
    sent = json.loads(described["Content"])
    assert sent["training_details"]["training_job_details"]["hyper_parameters"] == details["hyper_parameters"]
    assert sent["additional_information"]["custom_details"]["ledger_run_id"] == runs.run_id


# --- OpenSSF model signing, verified by model-signing's own command ----------------------------------------------


def model_signing_verify(model: Path, signature: Path, key: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "model_signing"), "verify", "key", str(model), "--signature", str(signature),
                           "--public_key", f"{key}.pub"], capture_output=True, text=True, timeout=120)


def test_a_signed_model_verifies_with_model_signing_and_fails_after_one_byte_changes(runs, keys, capsys):
    code, out, _ = cli(capsys, "sign-model", runs.run_id, "--key", str(keys.ec), "--model-dir", "model")
    assert code == 0 and "model_signing verify key" in out
    checked = model_signing_verify(Path("model"), Path("model.sig"), keys.ec)
    assert checked.returncode == 0 and "Verification succeeded" in checked.stdout, checked.stderr
    weights = Path("model/weights/layer-0.bin")
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01
    weights.write_bytes(bytes(data))
    assert model_signing_verify(Path("model"), Path("model.sig"), keys.ec).returncode != 0


def test_sign_model_takes_an_ec_key_and_says_how_to_make_one(runs, keys, capsys):
    code, _, err = cli(capsys, "sign-model", runs.run_id, "--key", str(keys.ed))
    assert code == 2 and "takes an EC key" in err and "--algorithm ecdsa-p256" in err and err.count("\n") == 1
    assert not Path(f"{record_of(runs.run_id).job_name}-model").exists()  # refused before anything was written


# --- the audit report links each run to its exports ---------------------------------------------------------


def test_each_export_is_a_later_fact_of_the_run_and_the_audit_report_lists_it(runs, keys, capsys):
    before = len(open_ledger().entries(runs.run_id))
    assert cli(capsys, "export", runs.run_id, "--format", "cyclonedx", "-o", "bom.json", "--sign", str(keys.ed))[0] == 0
    assert cli(capsys, "export", runs.run_id, "--format", "slsa", "-o", "p.jsonl", "--sign", str(keys.ed))[0] == 0
    entries = open_ledger().entries(runs.run_id)
    assert [e.kind for e in entries[before:]] == ["run.annotated", "run.annotated"]  # appended, nothing rewritten
    exports = record_of(runs.run_id).model_extra["annotations"]["exports"]
    mine = {e["format"]: e for e in exports.values() if e["destination"].startswith(str(Path.cwd()))}
    assert mine["cyclonedx"]["sha256"] == hashlib.sha256(Path("bom.json").read_bytes()).hexdigest()
    assert mine["cyclonedx"]["signature_file"] == str(Path("bom.json.sig").absolute())
    assert mine["slsa"]["signed_by"] == mine["cyclonedx"]["signed_by"]
    assert cli(capsys, "audit", "verify", "bom.json", "--key", f"{keys.ed}.pub")[0] == 0  # FILE.sig
    code, out, _ = cli(capsys, "show", runs.run_id)
    assert code == 0 and "Exports (" in out and mine["cyclonedx"]["sha256"][:16] in out

    assert cli(capsys, "audit", runs.run_id, "-o", "report.json")[0] == 0
    assert cli(capsys, "audit", runs.run_id, "-o", "report.html")[0] == 0
    [section] = [r for r in json.loads(Path("report.json").read_text())["runs"] if r["run_id"] == runs.run_id]
    listed = {(e["format"], e["destination"], e["sha256"]) for e in section["exports"]}
    assert {(e["format"], e["destination"], e["sha256"]) for e in mine.values()} <= listed
    html = Path("report.html").read_text().replace("<wbr>", "")  # long tokens carry break opportunities
    assert mine["slsa"]["sha256"] in html and str(Path("p.jsonl").absolute()) in html
    assert cli(capsys, "verify")[0] == 0


# --- bad input: one line, what to do next ---------------------------------------------------------------------


@pytest.mark.parametrize("args, exit_code, says", [
    (("export", "NOSUCHRUN", "--format", "slsa"), 1, "no run NOSUCHRUN"),
    (("export", "{run}", "--format", "spdx"), 2, "unknown export format 'spdx'"),
    (("export", "{run}", "--format", "slsa", "--sign", "missing.pem"), 1, "cannot read the private key"),
    (("export", "{run}", "--format", "slsa", "--sign", "{ec}"), 2, "not an Ed25519 key"),
    (("export", "{run}", "--format", "cyclonedx", "--to", "http://127.0.0.1:9"), 2, "--to sends OpenLineage"),
    (("export", "{run}", "--format", "openlineage", "--to", "http://127.0.0.1:9"), 1,
     "could not send OpenLineage events to http://127.0.0.1:9"),
    (("sign-model", "{run}", "--key", "missing.pem"), 1, "cannot read the private key"),
])
def test_bad_input_is_one_line_saying_what_to_do(runs, keys, capsys, args, exit_code, says):
    before = len(open_ledger().entries(runs.run_id))
    code, out, err = cli(capsys, *(a.format(run=runs.run_id, ec=keys.ec) for a in args))
    assert code == exit_code and says in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert out == "" and len(open_ledger().entries(runs.run_id)) == before  # nothing recorded


def test_an_archive_that_is_not_the_recorded_one_is_refused(workspace, keys, capsys):
    assert main(["run", "src/train.py", "--channel", "train=data", "--job-name", "swapped"]) == 0
    archive = Path(record_of("swapped").outcome.model_artifact.uri.removeprefix("file://"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    capsys.readouterr()
    for args in (("export", "swapped", "--format", "slsa", "-o", "p.jsonl"),
                 ("sign-model", "swapped", "--key", str(keys.ec), "--model-dir", "model")):
        code, _, err = cli(capsys, *args)
        assert code == 3 and "is not the one recorded" in err and err.count("\n") == 1, err
    assert not Path("p.jsonl").exists() and not Path("model").exists()
    archive.unlink()
    code, _, err = cli(capsys, "export", "swapped", "--format", "slsa")
    assert code == 1 and "cannot read the model artifact" in err and err.count("\n") == 1


def test_a_failed_run_ends_with_a_fail_event_and_has_no_model_to_attest(workspace, capsys):
    (workspace / "src" / "fail.py").write_text("raise SystemExit('boom: out of memory')\n")
    assert main(["run", "src/fail.py", "--channel", "train=data", "--job-name", "failing"]) == 1
    capsys.readouterr()
    code, out, _ = cli(capsys, "export", "failing", "--format", "openlineage")
    start, fail = (json.loads(line) for line in out.splitlines())
    assert code == 0 and (start["eventType"], fail["eventType"]) == ("START", "FAIL")
    assert "boom: out of memory" in fail["run"]["facets"]["errorMessage"]["message"] and fail["outputs"] == []
    check_2_0_2(fail)
    code, _, err = cli(capsys, "export", "failing", "--format", "slsa")
    assert code == 1 and "has no model artifact (status Failed)" in err and err.count("\n") == 1


def test_exports_accumulate_as_facts_on_sqlite_and_postgres(db_url):
    from tests.test_store import make_record

    book = open_ledger()
    [run] = book.append_many([make_record(1)])
    for name in ("slsa /a", "cyclonedx /b"):
        book.annotate(run.run_id, {"exports": {name: {"format": name.split()[0], "sha256": "0" * 64}}})
    book.annotate(run.run_id, {"mlflow_run_id": "m1"})
    annotations = book.get(run.run_id).model_extra["annotations"]
    assert set(annotations["exports"]) == {"slsa /a", "cyclonedx /b"} and annotations["mlflow_run_id"] == "m1"
    assert book.verify().ok
    assert book.rebuild() == 1 and book.verify().ok


def test_the_library_exports_and_signs_as_the_commands_do(runs, keys, tmp_path):
    import ledger

    done = ledger.export(runs.run_id, "openlineage")
    assert done.destination == "-" and done.recorded
    assert [json.loads(line)["eventType"] for line in done.data.decode().splitlines()] == ["START", "COMPLETE"]
    signed = ledger.sign_model(runs.run_id, key=str(keys.ec), model_dir=str(tmp_path / "m"))
    assert model_signing_verify(Path(signed.model_dir), Path(signed.destination), keys.ec).returncode == 0
