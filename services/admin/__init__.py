"""The admin console: the seller's side of Leadwire (docs/admin.md)."""
