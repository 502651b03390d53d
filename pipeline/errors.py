"""Named errors. Each message says what is wrong, where, and what to do about it.

The Luigi tasks and the console script show these messages as they are, without a traceback:
they are meant for the person who runs the month, not for the developer.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: an expected failure with a message a person can act on."""


class ConfigError(PipelineError):
    """luigi.cfg, .env or the environment do not describe a runnable month."""


class DropError(PipelineError):
    """A drop folder or one of its files cannot be read as the schema requires."""


class DropChangedError(DropError):
    """A drop file changed while its month was running; nothing was published."""


class RejectedRowsError(PipelineError):
    """More rows of a file failed to parse than the configured max reject ratio allows."""


class QualityGateError(PipelineError):
    """Soda checks failed; the month was not published."""


class PostgresUnavailableError(PipelineError):
    """PostgreSQL could not be reached or refused the login."""


class ObjectStoreError(PipelineError):
    """S3-compatible object storage is not described by the environment, does not answer, or refused the
    credentials."""


class LockBusyError(PipelineError):
    """A month's lock is held by another run, and the caller asked not to wait for it."""


class PublishError(PipelineError):
    """PostgreSQL refused the month's data inside the publish; the transaction rolled back."""


class PublishedMonthError(PipelineError):
    """A published month is immutable; a different drop for it needs --replace."""


class DeletionLimitError(PipelineError):
    """A --full-dump month would delete more users than allowed without confirmation."""


class LakeStateError(PipelineError):
    """The lake does not hold what this step needs (e.g. the previous month is not published)."""


class ContractError(PipelineError):
    """sql/schema.sql changed in a way the published months cannot follow (a column removed, a type narrowed)."""


class DropErrors(PipelineError):
    """Several files of a drop cannot be published: every one of them, in one message."""

    def __init__(self, as_of: object, errors: list[PipelineError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  {i}. {error}" for i, error in enumerate(errors, start=1))
        super().__init__(
            f"month {as_of}: {len(errors)} files of the drop cannot be published; nothing was published. "
            f"Fix each, then run the month again:\n{lines}"
        )
