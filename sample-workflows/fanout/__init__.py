"""Step code of the `fan_out` sample: split files into shards, measure each shard, merge."""
