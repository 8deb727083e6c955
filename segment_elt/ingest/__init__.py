"""The hot path: Segment's signed requests verified, capped per org, archived and staged.

Owns the archive (its key layout and backends) and raw.segment_events. Imports control and the root.
"""
