from gzpipe.shard.stage import ShardConfig, run_shard

__all__ = ["ShardConfig", "run_shard"]
