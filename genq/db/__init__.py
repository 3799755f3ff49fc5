"""The database: the source of truth for teams, tokens, datasets, jobs and their results."""

from genq.db.models import (  # noqa: F401
    ApiToken,
    Artifact,
    Base,
    Dataset,
    Job,
    JobLog,
    Metric,
    MetricRollup,
    Output,
    PreferenceVote,
    Rating,
    ShownPair,
    Team,
    UsageDay,
    Worker,
    WorkerHost,
    utcnow,
)
from genq.db.session import Database  # noqa: F401
