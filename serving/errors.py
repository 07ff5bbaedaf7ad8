"""Errors that carry their HTTP status and MLflow error-code name; one handler renders them."""

from typing import ClassVar


class ServingError(Exception):
    """Base: rendered as `{"error_code": ..., "message": ...}` with `status_code`."""

    status_code = 500
    error_code = "INTERNAL_ERROR"
    headers: ClassVar[dict[str, str] | None] = None


class BadRequest(ServingError):
    """The body could not be read as a request of the scoring protocol."""

    status_code = 400
    error_code = "BAD_REQUEST"


class InvalidInput(ServingError):
    """The request was read but does not fit the model's signature."""

    status_code = 400
    error_code = "INVALID_PARAMETER_VALUE"


class UnsupportedMediaType(ServingError):
    """Content type (or charset) the scoring protocol does not accept."""

    status_code = 415
    error_code = "INVALID_PARAMETER_VALUE"


class BodyTooLarge(ServingError):
    """The body is over the configured limit; it was not parsed."""

    status_code = 413
    error_code = "REQUEST_LIMIT_EXCEEDED"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes")


class RequestTooLarge(ServingError):
    """The request holds more rows, columns, cells or decoded bytes than its limit allows."""

    status_code = 413
    error_code = "REQUEST_LIMIT_EXCEEDED"

    def __init__(self, what: str, count: int, limit: int, setting: str) -> None:
        super().__init__(f"request has {count} {what}; the limit is {limit} ({setting})")


class StringTooLong(BadRequest):
    """A string value is longer than MODELYARD_MAX_STRING_CHARS."""

    def __init__(self, where: str, length: int, limit: int) -> None:
        super().__init__(
            f"{where}: a string of {length} characters; the limit is {limit}"
            " (MODELYARD_MAX_STRING_CHARS)"
        )


class UnknownModel(ServingError):
    """No served model has this name."""

    status_code = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"

    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' is not served here")


class UnknownAlias(ServingError):
    """The model is served, but not under this alias."""

    status_code = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"

    def __init__(self, model: str, alias: str) -> None:
        super().__init__(f"model '{model}' has no served alias '{alias}'")


class UnknownVersion(ServingError):
    """The model is served, but no alias serves this version now."""

    status_code = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"

    def __init__(self, model: str, version: str) -> None:
        super().__init__(f"model '{model}' serves no version '{version}' now")


class ModelNotReady(ServingError):
    """The slot has no loaded version yet."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}

    def __init__(self, model: str, alias: str) -> None:
        super().__init__(f"model '{model}' alias '{alias}' is not loaded yet")


class NothingServed(ServingError):
    """No model is served yet (the registry has not been read, or names none to serve)."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("no model is served yet")


class VersionStuck(ServingError):
    """Every predict thread of the version is held by a predict that timed out."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}

    def __init__(self, model: str, alias: str, version: str, threads: int) -> None:
        super().__init__(
            f"model '{model}' version {version} (alias '{alias}') is not answering: all "
            f"{threads} of its predict threads are held by predicts that timed out"
        )


class Overloaded(ServingError):
    """Too many requests in flight; try again shortly."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


class BodyTimeout(ServingError):
    """The client did not send the whole body within the configured time."""

    status_code = 408
    error_code = "DEADLINE_EXCEEDED"
    headers: ClassVar[dict[str, str] | None] = {"Connection": "close"}

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the request body did not arrive within {limit_s:g} s")


class BodiesOverBudget(ServingError):
    """The bodies being received already hold the memory allowed for them; retry shortly."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1", "Connection": "close"}

    def __init__(self, limit: int) -> None:
        super().__init__(f"request bodies being received already hold {limit} bytes")


class PredictTimeout(ServingError):
    """The model did not answer within the configured time."""

    status_code = 504
    error_code = "DEADLINE_EXCEEDED"


class ModelFailed(ServingError):
    """The model raised on valid input; details are logged, never returned."""

    def __init__(self, model: str, alias: str, version: str) -> None:
        super().__init__(
            f"model '{model}' version {version} (alias '{alias}') failed on this input"
        )


class Unauthorized(ServingError):
    """Missing or wrong credentials for an admin or webhook endpoint."""

    status_code = 401
    error_code = "UNAUTHENTICATED"


class KeyRequired(Unauthorized):
    """No API key, or one that is not known here."""

    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class PermissionDenied(ServingError):
    """A valid API key that may not call this model or pin this alias."""

    status_code = 403
    error_code = "PERMISSION_DENIED"


class KeyExhausted(ServingError):
    """An API key over its concurrency or request rate; it may retry after `retry_after_s`."""

    status_code = 429
    error_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property  # per instance: the wait depends on the key's rate
    def headers(self) -> dict[str, str]:  # type: ignore[override]
        """Retry-After in whole seconds."""
        return {"Retry-After": str(self.retry_after_s)}


class FeedbackNotCollected(ServingError):
    """No prediction log is configured, so labels have nowhere to go."""

    status_code = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"

    def __init__(self) -> None:
        super().__init__("feedback is not collected here: MODELYARD_PREDICTION_LOG is not set")


class FeedbackNotStored(ServingError):
    """The prediction log's spool cannot take the labels now (full, or not writable)."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "30"}
