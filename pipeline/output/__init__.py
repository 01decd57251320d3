"""The job's output folder: its layout (`layout`, the one place that names every path), the root and its
atomic writes (`root`), shard Parquet files (`writer`), shard markers and the manifest (`shards`), the driver
lock (`lock`)."""
