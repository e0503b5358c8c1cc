"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class DiffSCMError(ValueError):
    """Bad input or unusable artefact, explained in one line."""
