"""autolog(): botocore handlers that capture every CreateTrainingJob, whichever SDK builds it.

Every SDK generation ends in one API call, so one handler on `before-parameter-build.sagemaker.CreateTrainingJob`
sees the complete request (SDK 2.x Estimator.fit, framework estimators, @remote, SDK 3.x ModelTrainer.train, raw
boto3). botocore copies handlers into a session when the session is made, and into a client when the client is
made, so autolog installs in three places:
  1. botocore.handlers.BUILTIN_HANDLERS: every botocore session made afterwards has the handlers;
  2. the sessions it can find that exist already: boto3.DEFAULT_SESSION and the one passed as `boto_session`;
  3. the SageMaker client of a `sagemaker.Session` passed as `boto_session` (its client exists already), and the
     SageMaker clients SDK 3.x has cached already (it sends through those, not through the Session's client).
A client made before autolog() from a session that autolog cannot see is not captured (README says so).

autolog() is an edge: it opens the ledger once (a handle that checks the database on first use, so that a
database down at that moment only means records are spooled) and every capture of the process uses that handle.
"""

from __future__ import annotations

import sys
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ledger.config import load_settings
from ledger.run import say

CREATE = "before-parameter-build.sagemaker.CreateTrainingJob"
CREATED = "after-call.sagemaker.CreateTrainingJob"
DESCRIBED = "after-call.sagemaker.DescribeTrainingJob"
UNIQUE_ID = "ledger-autolog"


@dataclass
class _Options:
    project: str | None
    strict: bool | None
    data_pin: str | None
    session: Any  # a boto3 Session for capture's own AWS calls (ECR, S3, STS); None: the default chain


class _State:
    def __init__(self) -> None:
        self.options: _Options | None = None
        self.book: Any = None  # the ledger handle autolog opened; None until it could be
        self.lock = threading.Lock()
        self.pending: dict[str, str] = {}  # job name -> run id, for jobs launched by this process not yet settled
        self.registered: list[weakref.ref] = []  # event emitters we registered on, to unregister on disable
        self.local = threading.local()  # .skip: this thread sends a request that was captured already


_STATE = _State()


# --- the handlers ---------------------------------------------------------------------------------------------


def _on_create(params: dict, context: dict | None = None, **_: Any) -> None:
    """Capture and pin, then rewrite `params` in place: botocore validates and sends what we leave here."""
    options = _STATE.options
    if options is None or getattr(_STATE.local, "skip", False) or _seen(context, "ledger_captured"):
        return
    from ledger.errors import CaptureRefused
    from ledger.run.recorder import capture_request, save_launch

    try:
        settings = load_settings(strict=options.strict, data_pin=options.data_pin)
        capture = capture_request(params, session=options.session, settings=settings, project=options.project,
                                  region=(context or {}).get("client_region"))
        book = _book()
        record = save_launch(book, capture, settings)
        if book is not None:
            book.release_connections()  # none held open while the user's job runs
    except CaptureRefused:
        raise  # strict mode: the one case where the ledger stops a job
    except Exception as error:  # noqa: BLE001 - never break the user's job
        say(f"ledger: capture failed ({type(error).__name__}: {error}); the job was sent unrecorded")
        return
    params.clear()
    params.update(capture.request)
    with _STATE.lock:
        _STATE.pending[record.job_name] = record.run_id
    if context is not None:
        context["ledger_run_id"] = record.run_id


def _seen(context: dict | None, mark: str) -> bool:
    """Whether this API call's handler ran already, marking it so. A client can hold our handler twice (once from
    BUILTIN_HANDLERS, once registered again by a later autolog() on a session made while it was on); botocore
    gives every handler of one call the same context dict, so the second does nothing."""
    if context is None:
        return False
    seen = bool(context.get(mark))
    context[mark] = True
    return seen


def _on_created(parsed: dict, context: dict | None = None, **_: Any) -> None:
    """The job exists: record its ARN (after the launch, failures only warn)."""
    run_id = (context or {}).get("ledger_run_id")
    arn = (parsed or {}).get("TrainingJobArn")
    if not run_id or not arn or _seen(context, "ledger_arn_recorded"):
        return
    _after_launch(lambda book: book.record_outcome(run_id, {"status": "InProgress", "arn": arn}))


def _on_described(parsed: dict, **_: Any) -> None:
    """A describe that shows one of our jobs ended (fit(wait=True) polls this): record its outcome once."""
    status = (parsed or {}).get("TrainingJobStatus")
    name = (parsed or {}).get("TrainingJobName")
    from ledger.capture.outcome import TERMINAL_STATUSES
    from ledger.run.sync import settle

    if status not in TERMINAL_STATUSES:
        return
    with _STATE.lock:
        run_id = _STATE.pending.pop(name, None)
    if run_id:
        session = _STATE.options.session if _STATE.options else None
        _after_launch(lambda book: settle(book, run_id, parsed, session))


def _after_launch(action) -> None:
    try:
        book = _book()
        if book is None:
            raise RuntimeError("the ledger could not be opened")
        try:
            action(book)
        finally:
            book.release_connections()  # none held open while the user's job runs, whether or not it was written
    except Exception as error:  # noqa: BLE001 - the job runs on; `ledger sync` settles it later
        say(f"ledger: could not record the job's progress ({error}); `ledger sync` will settle it")


def _book():
    """The ledger handle of this autolog(), opened on first use when autolog() could not open it (a LEDGER_HOME
    that could not be made then); None while it cannot be: the caller spools."""
    with _STATE.lock:
        if _STATE.book is None and _STATE.options is not None:
            _STATE.book = _open_book(_STATE.options)
        return _STATE.book


def _open_book(options: "_Options"):
    from ledger.store.ledger import open_ledger

    try:
        return open_ledger(settings=load_settings(strict=options.strict, data_pin=options.data_pin),
                           check_schema="on use")
    except Exception:  # noqa: BLE001 - not now: each capture spools until it can be opened
        return None


HANDLERS = ((CREATE, _on_create), (CREATED, _on_created), (DESCRIBED, _on_described))


# --- installing -----------------------------------------------------------------------------------------------


def _emitters_of(target: Any) -> list[Any]:
    """The event emitters a session-like object exposes: botocore/boto3 sessions, clients, sagemaker.Session."""
    emitters = []
    if target is None:
        return emitters
    if hasattr(target, "sagemaker_client"):  # sagemaker.Session (SDK 2.x and 3.x): its clients exist already
        for attribute in ("sagemaker_client", "sagemaker_runtime_client"):
            client = getattr(target, attribute, None)
            if client is not None and hasattr(client, "meta"):
                emitters.append(client.meta.events)
        emitters += _emitters_of(getattr(target, "boto_session", None))
    elif hasattr(target, "meta") and hasattr(target.meta, "events"):  # a client
        emitters.append(target.meta.events)
    elif hasattr(target, "_session") and hasattr(target._session, "get_component"):  # boto3.Session
        emitters.append(target.events)
    elif hasattr(target, "get_component"):  # botocore Session
        emitters.append(target.get_component("event_emitter"))
    return emitters


def _sdk3_cached_clients() -> list[Any]:
    """SDK 3.x sends CreateTrainingJob through clients it caches process-wide, one per boto3 session
    (sagemaker.core.utils.utils.SageMakerClient), not through `Session.sagemaker_client`: a client cached before
    autolog() ran (a notebook that trained once already) holds no handlers, so register on each. Only when the SDK
    is imported already: autolog never imports it."""
    module = sys.modules.get("sagemaker.core.utils.utils")
    cache_type, factory = getattr(module, "_ClientCacheMeta", None), getattr(module, "SageMakerClient", None)
    try:
        cached = list((getattr(cache_type, "_instances", None) or {}).get(factory, {}).values())
    except Exception:  # noqa: BLE001 - an SDK whose cache looks different: nothing to add
        return []
    clients = [getattr(entry, "sagemaker_client", None) for entry in cached]
    return [client.meta.events for client in clients if client is not None and hasattr(client, "meta")]


def _capture_session(boto_session: Any) -> Any:
    """The boto3 Session whose credentials capture's own calls use."""
    if boto_session is None:
        return None
    if hasattr(boto_session, "boto_session"):
        return boto_session.boto_session
    if hasattr(boto_session, "client") and not hasattr(boto_session, "meta"):
        return boto_session
    return None


def autolog(project: str | None = None, boto_session: Any = None, strict: bool | None = None,
            data_pin: str | None = None, disable: bool = False) -> None:
    """Record and pin every SageMaker training job this process launches from now on.

    project:      the name runs are filed under (default: the git repository's name)
    boto_session: a sagemaker.Session, boto3 Session or client made before this call, to capture through it too
    strict:       refuse to launch a job with a pin gap (default: LEDGER_STRICT)
    data_pin:     'versions' | 'snapshot' | 'off' (default: LEDGER_DATA_PIN, else 'versions')
    disable:      remove every handler autolog installed
    """
    import boto3
    from botocore import handlers

    if disable:
        _uninstall()
        return
    load_settings(strict=strict, data_pin=data_pin)  # bad settings fail here, not inside a user's fit()
    _STATE.options = _Options(project, strict, data_pin, _capture_session(boto_session))
    _STATE.book = _open_book(_STATE.options)  # the one handle every capture of this process records through
    for event, handler in HANDLERS:
        if (event, handler) not in handlers.BUILTIN_HANDLERS:
            handlers.BUILTIN_HANDLERS.append((event, handler))
    emitters = _emitters_of(boto3.DEFAULT_SESSION) + _emitters_of(boto_session) + _sdk3_cached_clients()
    for emitter in emitters:
        for event, handler in HANDLERS:
            emitter.register(event, handler, unique_id=f"{UNIQUE_ID}:{event}")  # unique_id: twice is once
        if not any(ref() is emitter for ref in _STATE.registered):
            _STATE.registered.append(weakref.ref(emitter))


def _uninstall() -> None:
    from botocore import handlers

    _STATE.options = None
    _STATE.book = None
    handlers.BUILTIN_HANDLERS[:] = [h for h in handlers.BUILTIN_HANDLERS if h not in HANDLERS]
    for ref in _STATE.registered:
        emitter = ref()
        if emitter is not None:
            for event, handler in HANDLERS:
                emitter.unregister(event, handler, unique_id=f"{UNIQUE_ID}:{event}")
    _STATE.registered.clear()
    # Sessions made while autolog was on still hold the handlers: with no options they do nothing.


@contextmanager
def already_captured():
    """Within this block, this thread's CreateTrainingJob calls were captured by the caller (ledger run,
    reproduce): autolog lets them through unrecorded, so nothing is recorded twice."""
    _STATE.local.skip = True
    try:
        yield
    finally:
        _STATE.local.skip = False


def is_enabled() -> bool:
    return _STATE.options is not None
