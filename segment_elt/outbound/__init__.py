"""Outbound sync: computed traits, audiences, account traits and moments back to Segment.

Owns the outbound settings of a connection and the sync's records. Imports control and the root.
"""
