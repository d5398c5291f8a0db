from gzpipe.shard.stage import ShardConfig, read_manifest, run_shard

__all__ = ["ShardConfig", "read_manifest", "run_shard"]
