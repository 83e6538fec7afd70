"""Image: the training image's tag resolved to its digest, so the request can name `repository@sha256:…`.

DescribeTrainingJob only returns the string that was submitted, so the digest must be resolved at submit time.
ECR is asked in the image's own account and region; AWS-owned images (built-in algorithms, framework images) live
in AWS accounts where a lookup may be refused: that is a gap, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.capture import aws_error_code, client_for
from ledger.record import Gap, ImagePin

ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

# Every manifest kind a tag can point at, so that ECR returns the digest `docker pull` would pull, even for a
# multi-architecture index, instead of refusing or converting it.
MANIFEST_MEDIA_TYPES = [
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
]


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: [registry/]repository[:tag][@digest]."""

    registry: str | None
    repository: str
    tag: str | None
    digest: str | None

    @property
    def ecr_match(self) -> re.Match[str] | None:
        return ECR_HOST.match(self.registry) if self.registry else None

    @property
    def is_ecr(self) -> bool:
        return self.ecr_match is not None

    @property
    def account(self) -> str | None:
        match = self.ecr_match
        return match["account"] if match else None

    @property
    def region(self) -> str | None:
        match = self.ecr_match
        return match["region"] if match else None

    @property
    def repository_uri(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository


def parse_image_uri(uri: str) -> ImageRef:
    """Split an image reference the way docker does. Pure.

    The first path component is a registry host when it has a dot or a port, or is `localhost`; the tag is what
    follows the last colon of the last path component; the digest what follows `@`.
    """
    name, _, digest = uri.strip().partition("@")
    registry = None
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, name = first, rest
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
    return ImageRef(registry=registry, repository=name, tag=tag or None, digest=digest or None)


def build_pinned_image_uri(repository_uri: str, digest: str) -> str:
    """`repository@sha256:…`, the form SageMaker accepts as TrainingImage. Pure."""
    if not DIGEST.match(digest):
        raise ValueError(f"not an image digest: {digest!r}")
    return f"{repository_uri}@{digest}"


def capture_image(training_image: str | None, session=None) -> tuple[ImagePin, list[Gap]]:
    """Pin the training image by digest. The caller rewrites TrainingImage to `pin.pinned_uri` when it is set."""
    if not training_image:
        return ImagePin(), [
            Gap(
                what="image",
                why="the request names no TrainingImage (an AlgorithmName or a Marketplace algorithm is not pinned)",
                fix="pass image_uri= (an ECR image) to the estimator so the ledger can pin it by digest",
            )
        ]
    ref = parse_image_uri(training_image)
    if ref.digest:
        pin = ImagePin(
            uri=training_image,
            digest=ref.digest,
            pinned_uri=build_pinned_image_uri(ref.repository_uri, ref.digest) if DIGEST.match(ref.digest) else None,
            source="ecr" if ref.is_ecr else "registry",
        )
        return pin, []
    if not ref.is_ecr:
        return ImagePin(uri=training_image), [
            Gap(
                what=f"image {training_image}",
                why="a tag in a registry that is not ECR: the ledger cannot resolve it to a digest",
                fix=f"name the image by digest: docker pull {training_image} && docker inspect --format "
                "'{{index .RepoDigests 0}}' " + f"{training_image}, then pass that repository@sha256:… as image_uri",
            )
        ]
    tag = ref.tag or "latest"
    digest, gap = _resolve_ecr_tag(ref, tag, session)
    if gap:
        return ImagePin(uri=training_image), [gap]
    return (
        ImagePin(
            uri=training_image,
            digest=digest,
            pinned_uri=build_pinned_image_uri(ref.repository_uri, digest),
            source="ecr",
        ),
        [],
    )


def _resolve_ecr_tag(ref: ImageRef, tag: str, session) -> tuple[str | None, Gap | None]:
    """The digest a tag points at, asked of ECR in the image's account and region: (digest, None) or (None, gap)."""
    from botocore.exceptions import BotoCoreError, ClientError

    what = f"image {ref.repository_uri}:{tag}"
    by_digest_fix = (
        f"name the image by digest (repository@sha256:…); find it with: aws ecr describe-images --registry-id "
        f"{ref.account} --repository-name {ref.repository} --image-ids imageTag={tag} --region {ref.region}"
    )
    try:
        ecr = client_for(session, "ecr", region_name=ref.region)
        try:
            response = ecr.batch_get_image(
                registryId=ref.account,
                repositoryName=ref.repository,
                imageIds=[{"imageTag": tag}],
                acceptedMediaTypes=MANIFEST_MEDIA_TYPES,
            )
            images, failures = response.get("images", []), response.get("failures", [])
        except ClientError as error:
            # Pulling (BatchGetImage) and describing are separate permissions: a caller refused one may hold the other.
            if not aws_error_code(error).startswith("AccessDenied"):
                raise
            response = ecr.describe_images(
                registryId=ref.account, repositoryName=ref.repository, imageIds=[{"imageTag": tag}]
            )
            images = [{"imageId": {"imageDigest": d["imageDigest"]}} for d in response.get("imageDetails", [])]
            failures = []
    except ClientError as error:
        code = aws_error_code(error)
        if code.startswith("AccessDenied"):
            why = (
                f"ECR refused to resolve the tag in account {ref.account} ({code}); images owned by AWS "
                "(built-in algorithms, framework containers) often refuse lookups from your credentials"
            )
            return None, Gap(what=what, why=why, fix=by_digest_fix)
        if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
            why = f"{code}: repository {ref.repository} or tag {tag} not found in account {ref.account}, {ref.region}"
            fix = f"check the image URI or push it (docker push {ref.repository_uri}:{tag}); or {by_digest_fix}"
            return None, Gap(what=what, why=why, fix=fix)
        return None, Gap(what=what, why=f"ECR lookup failed: {code}: {error}", fix=by_digest_fix)
    except BotoCoreError as error:
        return None, Gap(what=what, why=f"ECR could not be reached: {error}", fix=by_digest_fix)

    for image in images:
        digest = image.get("imageId", {}).get("imageDigest")
        if digest:
            return digest, None
    reason = "; ".join(f"{f.get('failureCode')}: {f.get('failureReason')}" for f in failures) or "no image returned"
    return None, Gap(
        what=what,
        why=f"tag {tag} not found in {ref.repository_uri} ({reason})",
        fix=f"check the tag, or push it: docker push {ref.repository_uri}:{tag}",
    )
