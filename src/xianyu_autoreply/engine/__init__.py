"""The account scheduling engine: sessions per account, supervision, write-through updates, reply pipeline."""
