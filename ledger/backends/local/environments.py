"""The job's own Python environment: a virtual environment built from a lock and cached by the lock's digest.

    load_profiles, find_profile, match_image   pure: SageMaker framework images and the packages each carries
    build_image_uri                            pure: the image SageMaker would use for a profile in a region
    plan_environment                           pure: image or recorded set + requirements.txt -> EnvironmentPlan
    find_python                                side effects: an interpreter of a minor version on this machine
    ensure_environment                         side effects: the cached environment for a plan, built if missing

A job never runs in the ledger's own environment. For a framework image the environment is the image's profile
(profiles/profiles.json, with the sources each version was read from, and a lock per Python); for any other image
it is the package set recorded for the run (on a first run, the launching environment's: then the job's
environment is a virtual environment layered over it, read-only, so nothing the job installs reaches it). The job's
requirements.txt is installed on top, as the framework containers do. uv builds it where it can (seconds), pip
otherwise; a built environment is reused by every job with the same lock, offline.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ledger.capture.environment import normalize_package_name
from ledger.capture.image import parse_image_uri
from ledger.errors import LedgerError, UsageError
from ledger.record import sha256_hex

PROFILES_DIR = Path(__file__).with_name("profiles")
SUPPORT_DIR = Path(__file__).with_name("container_support")  # put on the job's path: see its __init__ docstring
MARKER = ".ledger-environment.json"  # written last: an environment without it is half-made
NOT_ON_THE_INDEX = {"sagemaker-ledger"}  # the ledger itself: a job does not need it, and it may be a work tree
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Profile:
    """The Python side of one SageMaker framework image, as profiles.json describes it."""

    name: str  # as `sagemaker.image_uris.retrieve` names it: "xgboost:1.7-1"
    directory: str
    repository: str
    tags: tuple[str, ...]
    tag: str
    registries: dict[str, str]
    image_python: str
    pythons: dict[str, str]  # minor version -> "exact" (the image's own) | "nearest" (closest installable set)
    training_module: str
    toolkit: str
    sources: tuple[str, ...]
    deviations: dict[str, list[str]]
    xgboost_container: bool = False

    def lock_text(self, minor: str) -> str:
        return (PROFILES_DIR / self.directory / f"py{minor}.lock").read_text()


@functools.lru_cache(maxsize=1)
def load_profiles() -> dict[str, Profile]:
    data = json.loads((PROFILES_DIR / "profiles.json").read_text())
    return {name: Profile(name=name, directory=p["directory"], repository=p["repository"], tags=tuple(p["tags"]),
                          tag=p["tag"], registries=p["registries"], image_python=p["image_python"],
                          pythons=p["pythons"], training_module=p["training_module"], toolkit=p["toolkit"],
                          sources=tuple(p["sources"]), deviations=p["deviations"],
                          xgboost_container=p.get("xgboost_container", False))
            for name, p in data["profiles"].items()}


def find_profile(framework: str) -> Profile:
    """`NAME:VERSION` as the SDK's image_uris.retrieve takes them; a UsageError naming the known ones otherwise."""
    profiles = load_profiles()
    name, _, version = framework.strip().partition(":")
    if framework.strip() in profiles:
        return profiles[framework.strip()]
    known = ", ".join(sorted(profiles))
    if not any(p.split(":")[0] == name for p in profiles):
        raise UsageError(f"unknown framework {name!r}", f"use one of: {known}")
    raise UsageError(f"no profile of {name} version {version or '(none given)'!r}", f"use one of: {known}")


def build_image_uri(profile: Profile, region: str) -> str:
    """The training image SageMaker uses for this profile in `region` (the SDK's image_uri_config registries)."""
    account = profile.registries.get(region)
    if account is None:
        raise UsageError(f"{profile.name} has no image in region {region!r}",
                         f"use one of: {', '.join(sorted(profile.registries))}")
    return f"{account}.dkr.ecr.{region}.{_dns_suffix(region)}/{profile.repository}:{profile.tag}"


def _dns_suffix(region: str) -> str:
    """The region's partition's DNS suffix, from botocore's endpoint data (as the SDK builds image URIs)."""
    import botocore.session

    for partition in botocore.session.get_session().get_data("endpoints")["partitions"]:
        if region in partition["regions"] or re.match(partition["regionRegex"], region):
            return partition["dnsSuffix"]
    return "amazonaws.com"


def match_image(image: str | None) -> tuple[Profile | None, str | None]:
    """The profile of a framework image (any registry or region), and a note when the match is not by tag.

    An image named by digest alone gives no version: the repository's newest profile stands in, and the note says
    so (the record names it as a deviation)."""
    if not image:
        return None, None
    reference = parse_image_uri(image)
    repository, tag, digest = reference.repository.rsplit("/", 1)[-1], reference.tag, reference.digest
    candidates = [p for p in load_profiles().values() if p.repository == repository]
    for profile in candidates:
        if tag and tag in profile.tags:
            return profile, None
    if candidates and digest and not tag:
        newest = max(candidates, key=lambda p: [int(x) for x in re.findall(r"\d+", p.tag)])
        return newest, (f"the image is named by digest only, which names no version: the profile of "
                        f"{newest.name}, the newest profiled {repository}, stands in")
    return None, None


# --- the plan ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentPlan:
    """What the job's environment is to be. Pure data: `lock_text` is what is built, `lock_sha256` its key."""

    origin: str  # "image profile" | "recorded set"
    python_minor: str
    base_lock: str
    profile: Profile | None = None
    python_exact: bool | None = None  # for a profile: whether this is the image's own Python minor version
    requirements: str | None = None  # requirements.txt, installed on top
    requirements_satisfied: bool = False  # requirements.txt was there, and the base set already satisfies it
    layer: str | None = None  # the recorded set is the launching environment's, here: layered over it
    image: str | None = None
    deviations: tuple[str, ...] = ()

    @property
    def lock_text(self) -> str:
        text = self.base_lock
        if self.profile is None:
            text = f"# Python {self.python_minor}\n" + text if text else text
        if self.requirements:
            text += "# requirements.txt, installed on top\n" + self.requirements.strip() + "\n"
        return text

    @property
    def lock_sha256(self) -> str:
        return build_lock_digest(self.lock_text)

    @property
    def cache_key(self) -> str:
        """The lock's digest; for a layered environment, with the path of the layer it reads (a machine's own)."""
        return self.lock_sha256 if not self.layer else sha256_hex(self.lock_sha256 + self.layer)

    def describe(self) -> str:
        """One line: what stands in for the image."""
        what = (f"image profile {self.profile.name}" if self.profile else
                "the recorded package set" + (" (the launching environment's, layered)" if self.layer else ""))
        return what + (" + requirements.txt" if self.requirements else "")


def build_lock_digest(lock_text: str) -> str:
    """sha256 of a lock without its header comment (uv's header names the output path, which says nothing)."""
    lines = lock_text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return sha256_hex("\n".join(lines) + "\n")


def minor_of(version: str | None) -> str:
    return ".".join((version or "").split(".")[:2])


def plan_environment(*, image: str | None, profile: Profile | None = None, recorded: tuple[str, dict] | None,
                     current: tuple[str, dict], current_layer: str | None, requirements: str | None,
                     pythons: set[str]) -> EnvironmentPlan:
    """Pure. `recorded` and `current` are (Python version, {package: version}): the run's recorded set (None on a
    first run) and the launching environment's, whose site-packages is `current_layer`; `pythons` the minor
    versions found on this machine."""
    note = None
    if profile is None:
        profile, note = match_image(image)
    current_minor = minor_of(current[0])
    if profile is not None:
        exact = next(m for m, kind in profile.pythons.items() if kind == "exact")
        if exact in pythons:
            minor = exact
        elif current_minor in profile.pythons:
            minor = current_minor
        else:
            raise UsageError(f"{profile.name} has no package set for Python {current_minor}, and its image's Python "
                             f"{exact} is not on this machine",
                             f"install Python {exact} (pyenv install {exact}, or uv python install {exact})")
        deviations = list(profile.deviations.get("always", [])) + list(profile.deviations.get(minor, []))
        base = profile.lock_text(minor)
        packages = read_lock_packages(base)
        plan = dict(origin="image profile", profile=profile, python_exact=minor == exact, python_minor=minor,
                    base_lock=base)
    else:
        python, packages = recorded if recorded else current
        minor = minor_of(python)
        layered = minor == current_minor and packages == current[1] and current_layer is not None
        kept = {n: v for n, v in sorted(packages.items()) if layered or n not in NOT_ON_THE_INDEX}
        deviations = [] if layered else [f"{n} is not installed: not on the package index"
                                         for n in sorted(set(packages) & NOT_ON_THE_INDEX)]
        if minor not in pythons:
            raise UsageError(f"the recorded package set needs Python {minor}, which is not on this machine",
                             f"install Python {minor} (pyenv install {minor}, or uv python install {minor})")
        base = "".join(f"{n}=={v}\n" for n, v in kept.items())
        plan = dict(origin="recorded set", python_minor=minor, base_lock=base,
                    layer=current_layer if layered else None)
    if note:
        deviations.append(note)
    unsatisfied = find_unsatisfied_requirements(requirements, packages, minor) if requirements else []
    return EnvironmentPlan(**plan, image=image, deviations=tuple(deviations),
                           requirements=requirements if unsatisfied else None,
                           requirements_satisfied=bool(requirements) and not unsatisfied)


def read_lock_packages(lock_text: str) -> dict[str, str]:
    """{normalized name: version} of a lock's `name==version` lines."""
    return {normalize_package_name(m.group(1)): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", lock_text, flags=re.M)}


def find_unsatisfied_requirements(requirements_text: str, packages: dict[str, str],
                                  python_minor: str | None = None) -> list[str]:
    """The lines of a requirements.txt that `packages` ({name: version}) do not satisfy; anything unreadable counts.

    A line we cannot judge (an option, a URL, an editable) is returned as unsatisfied, so the installer decides.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    marker_env = {"python_version": python_minor} if python_minor else None
    versions = {normalize_package_name(k): v for k, v in packages.items()}
    unsatisfied = []
    for raw in requirements_text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            unsatisfied.append(line)
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(marker_env):
            continue
        installed = versions.get(normalize_package_name(requirement.name))
        if installed is None or requirement.url or not requirement.specifier.contains(installed, prereleases=True):
            unsatisfied.append(line)
    return unsatisfied


# --- Pythons ----------------------------------------------------------------------------------------------------


def _interpreter_minor(path: str) -> str | None:
    try:
        done = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def base_interpreter() -> str:
    """The interpreter this (virtual) environment was made from: a new environment is made from it, not from us."""
    return getattr(sys, "_base_executable", None) or sys.executable


@functools.lru_cache(maxsize=None)
def find_python(minor: str) -> str | None:
    """An interpreter of `minor` on this machine, asked of uv (downloads off), PATH and pyenv; None if there is none."""
    if minor_of(".".join(map(str, sys.version_info[:2]))) == minor:
        return base_interpreter()
    candidates = []
    uv = find_uv()
    if uv:
        done = subprocess.run([uv, "python", "find", "--no-python-downloads", minor], capture_output=True, text=True,
                              env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
        candidates += [done.stdout.strip()] if done.returncode == 0 and done.stdout.strip() else []
    candidates += [p for p in [shutil.which(f"python{minor}")] if p]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        found = Path(root, "versions").glob(f"{minor}.*/bin/python{minor}") if root else []
        candidates += [str(p) for p in sorted(found, key=lambda p: [int(x) for x in re.findall(r"\d+", p.parts[-3])],
                                              reverse=True)]
    return next((c for c in candidates if _interpreter_minor(c) == minor), None)


def find_uv() -> str | None:
    """uv beside this interpreter (it is a dependency), else the uv package's own finder, else PATH."""
    beside = Path(sys.executable).with_name("uv")
    if beside.is_file():
        return str(beside)
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


# --- building ---------------------------------------------------------------------------------------------------


@dataclass
class JobEnvironment:
    """A built environment: where it is, its interpreter, and how it was made."""

    path: Path
    python: Path
    python_version: str
    lock_sha256: str
    tool: str
    built_now: bool = False
    seconds: float = 0.0
    packages: dict[str, str] = field(default_factory=dict)  # its own site-packages (not a layer under it)
    layer: str | None = None  # the site-packages it is layered over


def ensure_environment(plan: EnvironmentPlan, cache_dir: Path, log: LogFn) -> JobEnvironment:
    """The environment of `plan`, from the cache, or built into it now (one builder at a time per lock)."""
    digest = plan.cache_key
    path = cache_dir / digest
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{digest}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        marker = path / MARKER
        if marker.is_file():
            return _read_marker(path, marker)
        shutil.rmtree(path, ignore_errors=True)  # half-made by a build that died
        try:
            return _build(plan, path, log)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise


def _read_marker(path: Path, marker: Path) -> JobEnvironment:
    data = json.loads(marker.read_text())
    return JobEnvironment(path=path, python=path / "bin" / "python", python_version=data["python_version"],
                          lock_sha256=data["lock_sha256"], tool=data["tool"], packages=data.get("packages", {}),
                          layer=data.get("layer"))


def _build(plan: EnvironmentPlan, path: Path, log: LogFn) -> JobEnvironment:
    interpreter = find_python(plan.python_minor)
    if interpreter is None:
        raise UsageError(f"Python {plan.python_minor} is not on this machine",
                         f"install it (pyenv install {plan.python_minor}, or uv python install {plan.python_minor})")
    uv = find_uv()
    tool = "uv" if uv else "pip"
    began = time.monotonic()
    log(f"ledger: building the job's environment ({plan.describe()}, Python {plan.python_minor}) with {tool}; "
        f"it is cached in {path} for the jobs after it")
    python = path / "bin" / "python"
    lock = path / "ledger.lock"
    if uv:
        _run_tool([uv, "venv", "--quiet", "--clear", "--seed", "--python", interpreter, str(path)], log, "making the environment",
                  offline_first=True)
    else:
        _run_tool([interpreter, "-m", "venv", str(path)], log, "making the environment")
    lock.write_text(plan.lock_text)
    if plan.base_lock and not plan.layer:
        base = path / "ledger-base.lock"
        base.write_text(plan.base_lock)
        hashes = ["--require-hashes"] if "--hash=" in plan.base_lock else []
        _install(uv, python, [*hashes, "--no-deps", "-r", str(base)], log, "installing the package set")
    layer = plan.layer
    if layer:
        # site.addsitedir, not a bare path: the layer's own .pth files (an editable install) are read too
        (Path(_site_packages(python)) / "_ledger_layer.pth").write_text(
            f"import site; site.addsitedir({layer!r})\n")
    if plan.requirements:
        requirements = path / "requirements.txt"
        requirements.write_text(plan.requirements)
        _install(uv, python, ["-r", str(requirements)], log, "installing requirements.txt", requirements=True)
    version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    packages = _freeze(uv, python)
    seconds = round(time.monotonic() - began, 1)
    (path / MARKER).write_text(json.dumps({"lock_sha256": plan.lock_sha256, "python_version": version, "tool": tool,
                                           "seconds": seconds, "packages": packages, "layer": layer}, indent=1))
    log(f"ledger: the job's environment is ready ({len(packages)} packages, Python {version}, {seconds} s)")
    return JobEnvironment(path=path, python=python, python_version=version, lock_sha256=plan.lock_sha256, tool=tool,
                          built_now=True, seconds=seconds, packages=packages, layer=layer)


def _site_packages(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _install(uv: str | None, python: Path, args: list[str], log: LogFn, what: str, requirements: bool = False) -> None:
    if uv:
        _run_tool([uv, "pip", "install", "--python", str(python), *args], log, what, offline_first=True,
                  requirements=requirements)
    else:
        _run_tool([str(python), "-m", "pip", "install", "--disable-pip-version-check", *args], log, what,
                  requirements=requirements)


def _freeze(uv: str | None, python: Path) -> dict[str, str]:
    argv = [uv, "pip", "freeze", "--python", str(python)] if uv else [str(python), "-m", "pip", "freeze"]
    text = subprocess.run(argv, capture_output=True, text=True).stdout
    return dict(sorted(read_lock_packages(text).items()))


def _run_tool(argv: list[str], log: LogFn, what: str, *, offline_first: bool = False,
              requirements: bool = False) -> None:
    """Run an installer, its output to `log` line by line (the progress of a first build). With `offline_first`,
    uv tries its own cache alone first: a build from a warm cache needs no network."""
    if offline_first and _quiet_run([*argv, "--offline"]):
        return
    lines: list[str] = []
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "UV_NO_PROGRESS": "1", "PIP_PROGRESS_BAR": "off"})
    for line in process.stdout:
        line = line.rstrip()
        if line:
            lines.append(line)
            log(f"  {line}")
    if process.wait() != 0:
        reason = _one_line_reason(lines)
        if requirements:
            raise LedgerError(f"requirements.txt cannot be installed: {reason}",
                              "fix or pin the line in requirements.txt (it is installed on top of the job's "
                              "environment, as the framework containers do)")
        raise LedgerError(f"{what} failed: {reason}", "check the package index can be reached; the log above has "
                          "the installer's output")


def _quiet_run(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, env={**os.environ, "UV_NO_PROGRESS": "1"}).returncode == 0


def _one_line_reason(lines: list[str]) -> str:
    """The installer's own reason, in one line: uv's 'Because …' sentence, or its last error line."""
    text = " ".join(line.strip(" ╰─▶×│") for line in lines)
    because = re.search(r"(Because .*?)(?: And because|$)", text)
    if because:
        return because.group(1).strip()[:300]
    errors = [line.strip(" ╰─▶×│") for line in lines if "error" in line.lower()]
    return (errors[-1] if errors else (lines[-1] if lines else "no output"))[:300]
