"""Gate errors: the gate could not judge (a bad policy, unusable data). CI reads them as exit 2."""


class GateError(Exception):
    """Base class: the gate could not evaluate; never a pass."""


class PolicyError(GateError):
    """A gate policy file is malformed; each problem names its 1-based line (0: the file)."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(
            "\n".join(
                f"{source}:{line}: {message}" if line else f"{source}: {message}"
                for line, message in problems
            )
        )
        self.source = source
        self.problems = problems


class EvaluationError(GateError):
    """A gate could not evaluate the candidate (bad data, unloadable baseline, ...)."""


class DatasetMismatch(EvaluationError):
    """A pinned evaluation dataset's content differs from the sha256 the policy pins."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        super().__init__(
            f"evaluation dataset {uri} has sha256 {actual}, but the policy pins {expected}"
        )
        self.uri = uri
        self.expected = expected
        self.actual = actual
