"""Outbound sync: computed traits, audiences, account traits and moments back to Segment."""
