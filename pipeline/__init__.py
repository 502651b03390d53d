"""streamflow-lake: monthly CSV drops → typed, as_of-partitioned Parquet lake → Soda gate → PostgreSQL.

``luigi --module pipeline Month --as-of 2024-01-31`` imports this package to find its tasks.
"""

from pipeline.tasks import MergeTable, Month, Report, StageTable, TrainingSet

__all__ = ["MergeTable", "Month", "Report", "StageTable", "TrainingSet"]
