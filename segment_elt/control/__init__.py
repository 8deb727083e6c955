"""The control plane: orgs, connections and their secrets, allowlists, app entities, the schema.

Owns every control.* and app.* table and their versioned migrations (schema.py), and the rules
about them (what a live connection is: connections.require_live). Imports only the root modules.
"""
