"""The one partitioning of restem: problem sets, as dynamic partitions (``restem demo`` adds ``arith``)."""

import dagster as dg

problem_sets = dg.DynamicPartitionsDefinition(name="problem_set")
