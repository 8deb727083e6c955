"""The control plane: orgs, connections and their secrets, allowlists, app entities, the schema."""
