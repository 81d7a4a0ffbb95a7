"""Storage: the data root, atomic Parquet tables, resumable shards, SQL over everything."""
