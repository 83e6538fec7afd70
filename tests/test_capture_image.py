"""Image pinning: parsing is pure; resolution runs against the moto server (ECR), except for a refused lookup."""

from __future__ import annotations

import json

import boto3
import pytest

from ledger.capture import RequestCounter
from ledger.capture.image import build_pinned_image_uri, capture_image, parse_image_uri

ACCOUNT = "123456789012"  # moto's account
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
DIGEST = "sha256:" + "b" * 64
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"  # AWS-owned, built in
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": "sha256:" + "a" * 64},
        "layers": [],
    }
)


# --- pure --------------------------------------------------------------------------------------------------------


def test_parse_ecr_uri_with_tag():
    ref = parse_image_uri(f"{REGISTRY}/team/train:v1")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (REGISTRY, "team/train", "v1", None)
    assert ref.is_ecr and ref.account == ACCOUNT and ref.region == "us-east-1"
    assert ref.repository_uri == f"{REGISTRY}/team/train"


def test_parse_digest_and_other_registries():
    ref = parse_image_uri(f"{REGISTRY}/train@{DIGEST}")
    assert ref.tag is None and ref.digest == DIGEST
    hub = parse_image_uri("python:3.11")
    assert (hub.registry, hub.repository, hub.tag, hub.is_ecr) == (None, "python", "3.11", False)
    port = parse_image_uri("localhost:5000/team/img")  # the port's colon is not a tag
    assert (port.registry, port.repository, port.tag) == ("localhost:5000", "team/img", None)
    assert parse_image_uri("ghcr.io/org/img:1@" + DIGEST).tag == "1"


def test_build_pinned_uri():
    assert build_pinned_image_uri(f"{REGISTRY}/train", DIGEST) == f"{REGISTRY}/train@{DIGEST}"
    with pytest.raises(ValueError):
        build_pinned_image_uri(f"{REGISTRY}/train", "sha256:short")


def test_no_image_is_a_gap():
    pin, gaps = capture_image(None)
    assert pin.digest is None and gaps and "TrainingImage" in gaps[0].why


def test_digest_is_pinned_as_is_without_a_request():
    pin, gaps = capture_image(f"{REGISTRY}/train:v1@{DIGEST}", session=object())  # a session it must not use
    assert not gaps
    assert pin.digest == DIGEST and pin.source == "ecr"
    assert pin.pinned_uri == f"{REGISTRY}/train@{DIGEST}"  # SageMaker wants repository@digest, no tag
    other, gaps = capture_image(f"ghcr.io/org/img@{DIGEST}", session=object())
    assert not gaps and other.source == "registry" and other.pinned_uri == f"ghcr.io/org/img@{DIGEST}"


def test_docker_hub_tag_is_a_gap():
    pin, gaps = capture_image("python:3.11-slim", session=object())
    assert pin.uri == "python:3.11-slim" and pin.digest is None
    assert len(gaps) == 1 and "not ECR" in gaps[0].why and "docker inspect" in gaps[0].fix


# --- against moto -------------------------------------------------------------------------------------------------


def test_ecr_tag_resolves_to_digest(aws):
    session = boto3.Session()
    ecr = session.client("ecr")
    ecr.create_repository(repositoryName="team/train")
    ecr.put_image(repositoryName="team/train", imageManifest=MANIFEST, imageTag="v1", imageDigest=DIGEST)
    counter = RequestCounter().attach(session, "ecr")

    pin, gaps = capture_image(f"{REGISTRY}/team/train:v1", session)

    assert not gaps
    assert pin.digest == DIGEST and pin.source == "ecr"
    assert pin.pinned_uri == f"{REGISTRY}/team/train@{DIGEST}"
    assert counter.calls == {"BatchGetImage": 1}


def test_untagged_ecr_image_means_latest(aws):
    session = boto3.Session()
    ecr = session.client("ecr")
    ecr.create_repository(repositoryName="train")
    ecr.put_image(repositoryName="train", imageManifest=MANIFEST, imageTag="latest", imageDigest=DIGEST)
    pin, gaps = capture_image(f"{REGISTRY}/train", session)
    assert not gaps and pin.digest == DIGEST


def test_missing_tag_is_a_gap(aws):
    session = boto3.Session()
    session.client("ecr").create_repository(repositoryName="train")
    pin, gaps = capture_image(f"{REGISTRY}/train:nope", session)
    assert pin.digest is None and pin.uri == f"{REGISTRY}/train:nope"
    assert len(gaps) == 1 and "nope" in gaps[0].why and "docker push" in gaps[0].fix


def test_aws_owned_image_missing_is_a_gap_not_an_exception(aws):
    pin, gaps = capture_image(XGBOOST_IMAGE, boto3.Session())
    assert pin.digest is None and pin.pinned_uri is None
    assert len(gaps) == 1
    assert "683313688378" in gaps[0].why and "sha256" in gaps[0].fix


def test_refused_lookup_is_a_gap_and_describe_is_tried():
    # moto cannot refuse a request, so this one case uses botocore's Stubber to play ECR answering AccessDenied.
    from botocore.stub import Stubber

    ecr = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x").client("ecr", region_name="us-east-1")
    with Stubber(ecr) as stub:
        stub.add_client_error("batch_get_image", "AccessDeniedException", "not authorized", 400)
        stub.add_client_error("describe_images", "AccessDeniedException", "not authorized", 400)
        pin, gaps = capture_image(XGBOOST_IMAGE, ecr)  # a client is accepted in place of a session
        stub.assert_no_pending_responses()
    assert pin.digest is None and pin.uri == XGBOOST_IMAGE
    assert len(gaps) == 1 and "refused" in gaps[0].why and "AccessDeniedException" in gaps[0].why

    # A caller refused BatchGetImage but allowed DescribeImages still gets the digest.
    with Stubber(ecr) as stub:
        stub.add_client_error("batch_get_image", "AccessDeniedException", "not authorized", 400)
        stub.add_response(
            "describe_images",
            {"imageDetails": [{"imageDigest": DIGEST, "imageTags": ["1.7-1"]}]},
        )
        pin, gaps = capture_image(XGBOOST_IMAGE, ecr)
    assert not gaps and pin.digest == DIGEST
    assert pin.pinned_uri == f"683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost@{DIGEST}"


def test_unreachable_ecr_is_a_gap(monkeypatch):
    from botocore.config import Config

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x")
    ecr = session.client("ecr", region_name="us-east-1", config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    pin, gaps = capture_image(f"{REGISTRY}/train:v1", ecr)
    assert pin.digest is None and len(gaps) == 1 and "reached" in gaps[0].why
