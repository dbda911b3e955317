"""The account scheduling engine: every account supervised, its messages one way through, one truth with the store.

Owns: `AccountScheduler` (scheduler.py: registry, per-account locks, lifecycle, supervision, write-through
operations), `AccountPipeline` (pipeline.py: admit -> record -> ack -> decide -> send -> log for one account) with
its store-backed steps and resume (steps.py), the replier (replier.py), orders and delivery (orders), owner
notifications (notify.py), the event bus (events.py) and scale-out leases (cluster.py).
Imports `platform`, `replies` and `store`; the API and the CLI sit on top of it.
"""
