"""Registry errors, each naming the object it is about."""


class RegistryError(Exception):
    """Base class: something about the registry or a model in it is wrong."""


class RegistryUnavailable(RegistryError):
    """The tracking server could not be reached or did not answer in time."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"MLflow tracking server at {uri} is not reachable: {reason}")
        self.uri = uri


class ModelNotFound(RegistryError):
    """No registered model has this name."""

    def __init__(self, model: str) -> None:
        super().__init__(f"no registered model named '{model}'")
        self.model = model


class AliasNotFound(RegistryError):
    """The registered model exists but has no such alias."""

    def __init__(self, model: str, alias: str) -> None:
        super().__init__(f"model '{model}' has no alias '{alias}'")
        self.model = model
        self.alias = alias


class VersionNotReady(RegistryError):
    """A model version did not reach READY (failed, or still pending when we gave up)."""

    def __init__(self, model: str, version: str, status: str) -> None:
        super().__init__(f"model '{model}' version {version} is {status}, not READY")
        self.model = model
        self.version = version
        self.status = status


class VersionNotFound(ModelNotFound):
    """The registered model has no such version."""

    def __init__(self, model: str, version: str) -> None:
        RegistryError.__init__(self, f"model '{model}' has no version {version}")
        self.model = model
        self.version = version


class StaleAlias(RegistryError):
    """An alias no longer names the version the caller expected: someone moved it."""

    def __init__(self, model: str, alias: str, expected: str, actual: str | None) -> None:
        now = f"version {actual}" if actual else "no version"
        super().__init__(
            f"model '{model}' alias '{alias}' names {now}, not the expected version {expected}; "
            "refusing to move it"
        )
        self.model = model
        self.alias = alias
        self.expected = expected
        self.actual = actual


class NothingToRollBack(RegistryError):
    """The alias's history records no earlier version to return to."""

    def __init__(self, model: str, alias: str, why: str) -> None:
        super().__init__(f"cannot roll back model '{model}' alias '{alias}': {why}")
        self.model = model
        self.alias = alias


class ArtifactUnavailable(RegistryError):
    """An artifact could not be downloaded (missing, or the store refused)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"cannot download {uri}: {reason}")
        self.uri = uri
