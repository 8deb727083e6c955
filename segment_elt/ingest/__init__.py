"""The hot path: Segment's signed requests verified, capped per org, archived and staged."""
