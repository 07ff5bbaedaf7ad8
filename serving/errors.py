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


class ModelNotReady(ServingError):
    """The slot has no loaded version yet."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}

    def __init__(self, model: str, alias: str) -> None:
        super().__init__(f"model '{model}' alias '{alias}' is not loaded yet")


class Overloaded(ServingError):
    """Too many requests in flight; try again shortly."""

    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


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
